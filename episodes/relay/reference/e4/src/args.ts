// The command line: `node src/main.ts --state DIR [--port N] [--retry-base-ms MS] [--max-attempts N]`.

export interface Options {
  state: string;
  port: number;
  retryBaseMs: number;
  maxAttempts: number;
}

export const USAGE = "usage: node src/main.ts --state DIR [--port N] [--retry-base-ms MS] [--max-attempts N]";

/** A usage error: the relay exits with status 2 and this one-line message. */
export class UsageError extends Error {}

function integer(flag: string, raw: string | undefined, min: number): number {
  if (raw === undefined || !/^\d+$/.test(raw) || Number(raw) < min) {
    throw new UsageError(`${flag}: expected an integer >= ${min}, got ${raw === undefined ? "nothing" : JSON.stringify(raw)}`);
  }
  return Number(raw);
}

export function parseArgs(argv: string[]): Options {
  const options: Partial<Options> = { port: 8080, retryBaseMs: 1000, maxAttempts: 5 };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    const value = argv[i + 1];
    switch (flag) {
      case "--state":
        if (value === undefined || value === "") throw new UsageError("--state: expected a directory");
        options.state = value;
        break;
      case "--port":
        options.port = integer(flag, value, 0);
        if (options.port > 65535) throw new UsageError(`--port: expected a port number, got ${value}`);
        break;
      case "--retry-base-ms":
        options.retryBaseMs = integer(flag, value, 0);
        break;
      case "--max-attempts":
        options.maxAttempts = integer(flag, value, 1);
        break;
      default:
        throw new UsageError(`unknown argument ${JSON.stringify(flag)}`);
    }
    i += 1;
  }
  if (options.state === undefined) throw new UsageError("--state DIR is required");
  return options as Options;
}

// The relay's entry point: `node src/main.ts --state DIR [--port N] ...` (see README.md).

import { type Options, parseArgs, USAGE, UsageError } from "./args.ts";
import { Dispatcher } from "./dispatcher.ts";
import { Relay } from "./server.ts";
import { Store } from "./store.ts";

function main(argv: string[]): void {
  let options: Options;
  try {
    options = parseArgs(argv);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`relay: error: ${error.message} (${USAGE})\n`);
      process.exit(2);
    }
    throw error;
  }
  const store = new Store(options.state);
  const dispatcher = new Dispatcher(store);
  const server = new Relay(store, dispatcher).server();
  server.on("error", (error: NodeJS.ErrnoException) => {
    process.stderr.write(`relay: error: cannot listen on port ${options.port}: ${error.code ?? error.name}\n`);
    process.exit(2);
  });
  server.listen(options.port, "127.0.0.1", () => {
    const address = server.address();
    const port = typeof address === "object" && address ? address.port : options.port;
    process.stdout.write(`listening on http://127.0.0.1:${port}\n`);
    dispatcher.resume();
  });
  const stop = () => {
    dispatcher.stop();
    server.close();
    server.closeAllConnections();
    store.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main(process.argv.slice(2));

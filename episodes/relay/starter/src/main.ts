// The relay's entry point: `node src/main.ts --state DIR [--port N]` (see README.md).
// Nothing is implemented yet: the server answers every request with 501.

import { createServer } from "node:http";

interface Options {
  state?: string;
  port: number;
}

function parseArgs(argv: string[]): Options {
  const options: Options = { port: 8080 };
  for (let i = 0; i < argv.length; i += 2) {
    if (argv[i] === "--state") options.state = argv[i + 1];
    else if (argv[i] === "--port") options.port = Number(argv[i + 1]);
  }
  return options;
}

const options = parseArgs(process.argv.slice(2));
const server = createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(501, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: "not_implemented" }));
  });
});
server.listen(options.port, "127.0.0.1", () => {
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : options.port;
  process.stdout.write(`listening on http://127.0.0.1:${port}\n`);
});
process.on("SIGTERM", () => process.exit(0));

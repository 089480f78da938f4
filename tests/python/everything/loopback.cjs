// Preloaded (node --require) into server-everything by test_third_party.py. The server listens
// with `app.listen(PORT)`, that is on every interface; this binds each TCP listener given only a
// port to 127.0.0.1 instead (PORT=0 then picks a free one), and prints the address it got as
// one JSON line on stderr: {"listening":"127.0.0.1:PORT"}.
"use strict";
const net = require("node:net");

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const port = args[0];
  if (typeof port === "number" || (typeof port === "string" && /^\d+$/.test(port))) {
    if (typeof args[1] === "string") args.splice(1, 1); // a host of its own: replaced
    args.splice(0, 1, Number(port), "127.0.0.1");
  } else if (port && typeof port === "object" && port.path === undefined) {
    args[0] = { ...port, host: "127.0.0.1" };
  }
  this.once("listening", () => {
    const address = this.address();
    if (address && typeof address === "object") {
      process.stderr.write(`${JSON.stringify({ listening: `${address.address}:${address.port}` })}\n`);
    }
  });
  return listen.apply(this, args);
};

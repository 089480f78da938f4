// Run by test_bearer.py with the node of the everything install (tests/python/everything):
// the official TypeScript MCP SDK through keyward with a bearer token in requestInit.headers.
//
//   node ts_client.cjs NPM_DIR URL session client|sdk   (token in MCP_BEARER_TOKEN)
//   node ts_client.cjs NPM_DIR URL discover             (the SDK's RFC 9728 + AS discovery)
//
// `client` is @modelcontextprotocol/client (2.x, the version the Inspector pins), `sdk` is
// @modelcontextprotocol/sdk (1.x, server-everything's dependency). Prints one JSON line on
// stdout: what the session saw, and every HTTP status it got, or the error it ended with.
// It never prints the token.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { createRequire } = require("node:module");

const [npmDir, url, mode, line] = process.argv.slice(2);
const load = createRequire(path.join(npmDir, "package.json"));
const token = process.env.MCP_BEARER_TOKEN;

function version(name) {
  // Not load(`${name}/package.json`): the 2.x packages do not export it.
  const file = path.join(npmDir, "node_modules", name, "package.json");
  return JSON.parse(fs.readFileSync(file, "utf8")).version;
}

function sdk(which) {
  if (which === "client") {
    const mod = load("@modelcontextprotocol/client");
    return { name: "@modelcontextprotocol/client", Client: mod.Client,
             Transport: mod.StreamableHTTPClientTransport };
  }
  return {
    name: "@modelcontextprotocol/sdk",
    Client: load("@modelcontextprotocol/sdk/client/index.js").Client,
    Transport: load("@modelcontextprotocol/sdk/client/streamableHttp.js")
      .StreamableHTTPClientTransport,
  };
}

function done(out, code) {
  const text = JSON.stringify(out);
  process.stdout.write(`${token ? text.split(token).join("<token>") : text}\n`);
  process.exit(code);
}

async function session() {
  const lib = sdk(line);
  const statuses = [];
  const authorized = [];
  // Every request the transport makes goes through this fetch: its status, and whether it
  // carried the bearer token (never the token itself).
  const counting = async (input, init) => {
    const headers = new Headers(init?.headers);
    authorized.push(headers.get("authorization") === `Bearer ${token}`);
    const reply = await fetch(input, init);
    statuses.push(reply.status);
    return reply;
  };
  const out = { sdk: lib.name, version: version(lib.name), statuses, authorized };
  const client = new lib.Client({ name: "keyward-bearer-test", version: "1.0.0" });
  const transport = new lib.Transport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
    fetch: counting,
  });
  try {
    await client.connect(transport);
    out.server = client.getServerVersion();
    out.protocol_version = transport.protocolVersion ?? null;
    out.tools = (await client.listTools()).tools.map((tool) => tool.name);
    const result = await client.callTool({
      name: "get_sleep_by_date", arguments: { date: "2025-02-02" },
    });
    out.call = { is_error: result.isError === true,
                 text: result.content.map((c) => c.text ?? "").join("") };
    await client.close();
    done(out, 0);
  } catch (error) {
    out.error = { name: error?.constructor?.name, message: String(error?.message ?? error),
                  code: error?.code ?? null, status: error?.status ?? null };
    done(out, 1);
  }
}

async function discover() {
  const name = "@modelcontextprotocol/client";
  const mod = load(name);
  const out = { sdk: name, version: version(name) };
  try {
    const info = await mod.discoverOAuthServerInfo(new URL(url));
    const metadata = info.authorizationServerMetadata ?? {};
    out.authorization_server = String(info.authorizationServerUrl);
    out.resource_metadata = info.resourceMetadata ?? null;
    out.metadata = { issuer: metadata.issuer ?? null,
                     authorization_endpoint: metadata.authorization_endpoint ?? null,
                     token_endpoint: metadata.token_endpoint ?? null,
                     registration_endpoint: metadata.registration_endpoint ?? null };
    done(out, 0);
  } catch (error) {
    out.error = { name: error?.constructor?.name, message: String(error?.message ?? error) };
    done(out, 1);
  }
}

(mode === "discover" ? discover() : session()).catch((error) => done({ error: String(error) }, 2));

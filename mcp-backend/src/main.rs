//! mcp-backend: the MCP server that sits behind keyward. It holds no secret.
//!
//! The health tools arrive with their own issue; until then the binary only says so.

fn main() {
    eprintln!("mcp-backend: not built yet; keyward forwards to any HTTP backend meanwhile");
    std::process::exit(2);
}

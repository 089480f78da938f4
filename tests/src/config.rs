//! keyward configurations for tests, each stated by what it changes from one loopback default.
//!
//! ```
//! # let dir = keyward_tests::dir::TempDir::new("doc");
//! let text = keyward_tests::config::Builder::files(dir.path())
//!     .backend("127.0.0.1:9".parse().unwrap())
//!     .client("agent", "mcp-client-agent")
//!     .set("ingress.backend_timeout", "500ms")
//!     .toml();
//! assert!(text.contains("backend_timeout = \"500ms\""));
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::dir::TempDir;

/// A keyward configuration being written.
#[derive(Debug, Clone)]
pub struct Builder {
    root: Table,
}

impl Builder {
    /// Ingress and admin on `127.0.0.1:0`, no clients, secrets from the files in `dir`,
    /// watched every 50 ms.
    pub fn files(dir: &Path) -> Self {
        Self::loopback()
            .set("secrets.source", "file")
            .set("secrets.dir", path(dir))
            .set("secrets.watch_interval", "50ms")
    }

    /// Ingress and admin on `127.0.0.1:0`, no clients, secrets from the Key Vault at
    /// `vault_url` (resolved to loopback, its certificate from `ca_file`), refreshed every
    /// 200 ms.
    pub fn key_vault(vault_url: &str, ca_file: &Path) -> Self {
        Self::loopback()
            .set("secrets.source", "keyvault")
            .set("secrets.vault_url", vault_url)
            .set("secrets.vault_address", "127.0.0.1")
            .set("secrets.ca_file", path(ca_file))
            .set("secrets.refresh_interval", "200ms")
    }

    fn loopback() -> Self {
        Self { root: Table::new() }
            .set("ingress.listen", "127.0.0.1:0")
            .set("admin.listen", "127.0.0.1:0")
    }

    /// `ingress.backend = "http://<addr>"`.
    pub fn backend(self, addr: SocketAddr) -> Self {
        self.set("ingress.backend", format!("http://{addr}"))
    }

    /// One more `[[ingress.clients]]` whose key is the secret named `secret`.
    pub fn client(self, id: &str, secret: &str) -> Self {
        self.push("ingress.clients", table([("id", id), ("secret", secret)]))
    }

    /// One more `[[egress.routes]]` (and an egress listener on `127.0.0.1:0`).
    pub fn route(self, prefix: &str, upstream: &str, secret: &str) -> Self {
        self.route_with(table([("prefix", prefix), ("upstream", upstream), ("secret", secret)]))
    }

    /// One more `[[egress.routes]]` stated whole (and an egress listener on `127.0.0.1:0`).
    pub fn route_with(self, route: Table) -> Self {
        self.set("egress.listen", "127.0.0.1:0").push("egress.routes", route)
    }

    /// Sets the value at a dotted key (`"ingress.tls.cert"`), creating the tables on the way.
    ///
    /// # Panics
    /// If a key on the way is not a table.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        let (table, last) = self.parent(key);
        table.insert(last.to_owned(), value.into());
        self
    }

    /// Appends a table to the array of tables at a dotted key.
    ///
    /// # Panics
    /// If the key holds something else.
    pub fn push(mut self, key: &str, entry: Table) -> Self {
        let (table, last) = self.parent(key);
        let array = table.entry(last).or_insert_with(|| Value::Array(Vec::new()));
        array.as_array_mut().unwrap_or_else(|| panic!("{key} is not an array")).push(entry.into());
        self
    }

    /// Removes the value at a dotted key, if there is one.
    pub fn remove(mut self, key: &str) -> Self {
        let (table, last) = self.parent(key);
        table.remove(last);
        self
    }

    fn parent<'a>(&mut self, key: &'a str) -> (&mut Table, &'a str) {
        let (path, last) = key.rsplit_once('.').map_or(("", key), |(p, l)| (p, l));
        let mut table = &mut self.root;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            table = table
                .entry(part)
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{part} in {key} is not a table"));
        }
        (table, last)
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        toml::to_string(&self.root).expect("a table serializes")
    }

    /// Writes the TOML text to `keyward.toml` in `dir` and returns its path.
    pub fn write(&self, dir: &TempDir) -> PathBuf {
        dir.write("keyward.toml", &self.toml())
    }
}

/// A table of string values, for [`Builder::push`] and [`Builder::route_with`].
pub fn table<const N: usize>(entries: [(&str, &str); N]) -> Table {
    entries.into_iter().map(|(k, v)| (k.to_owned(), Value::from(v))).collect()
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_what_differs_and_round_trips() {
        let text = Builder::files(Path::new("/s"))
            .backend("127.0.0.1:80".parse().unwrap())
            .client("a", "k-a")
            .client("b", "k-b")
            .route("/h/", "http://127.0.0.1:81/", "apim")
            .set("ingress.tls.cert", "/c.pem")
            .set("ingress.max_header_bytes", 4096)
            .remove("secrets.watch_interval")
            .toml();
        let back: Table = text.parse().unwrap();
        assert_eq!(back["ingress"]["backend"].as_str(), Some("http://127.0.0.1:80"));
        assert_eq!(back["ingress"]["clients"].as_array().unwrap().len(), 2);
        assert_eq!(back["ingress"]["tls"]["cert"].as_str(), Some("/c.pem"));
        assert_eq!(back["ingress"]["max_header_bytes"].as_integer(), Some(4096));
        assert_eq!(back["egress"]["listen"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(back["egress"]["routes"][0]["secret"].as_str(), Some("apim"));
        assert!(back["secrets"].get("watch_interval").is_none());
    }
}

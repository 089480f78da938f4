//! What the process does to itself before anything else: no core dump, and no reading of its
//! memory by anyone but root.
//!
//! A pod's containers may share a kernel view of each other's processes; the MCP server beside
//! keyward must not be able to read keyward's keys out of a core file, `/proc/<pid>/mem`,
//! `/proc/<pid>/environ` or a ptrace attach. A non-dumpable process has those `/proc` files
//! owned by root and refuses same-uid ptrace; `RLIMIT_CORE = 0` writes no core at all.
//!
//! Not done here: removing `IDENTITY_HEADER` from the environment. The Azure SDK's managed
//! identity credential reads it at every token request, so it has to stay; non-dumpable is
//! what keeps `/proc/<pid>/environ` from other processes of the uid, and keyward spawns
//! nothing that could inherit it.

/// Makes the process non-dumpable and sets its core size limit to zero. Returns what failed,
/// for the caller to log (hardening that fails is reported, and keyward still serves).
pub fn harden() -> Vec<&'static str> {
    use rustix::process::{set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit};
    let mut failed = Vec::new();
    if set_dumpable_behavior(DumpableBehavior::NotDumpable).is_err() {
        failed.push("prctl(PR_SET_DUMPABLE, 0)");
    }
    let none = Rlimit { current: Some(0), maximum: Some(0) };
    if setrlimit(Resource::Core, none).is_err() {
        failed.push("setrlimit(RLIMIT_CORE, 0)");
    }
    failed
}

/// Terminal echo turned off for as long as this lives (`keyward hash-key` reading a key).
/// Does nothing when standard input is not a terminal.
#[derive(Debug)]
pub struct EchoOff<'a> {
    fd: std::os::fd::BorrowedFd<'a>,
    saved: Option<rustix::termios::Termios>,
}

impl<'a> EchoOff<'a> {
    /// Turns echo off on `stdin` if it is a terminal.
    pub fn on(stdin: &'a std::io::Stdin) -> Self {
        use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
        use std::os::fd::AsFd;
        let fd = stdin.as_fd();
        let saved = tcgetattr(fd).ok();
        if let Some(saved) = &saved {
            let mut quiet = saved.clone();
            quiet.local_modes.remove(LocalModes::ECHO);
            let _ = tcsetattr(fd, OptionalActions::Now, &quiet);
        }
        Self { fd, saved }
    }

    /// Whether standard input is a terminal.
    pub fn is_terminal(&self) -> bool {
        self.saved.is_some()
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ =
                rustix::termios::tcsetattr(self.fd, rustix::termios::OptionalActions::Now, saved);
            eprintln!();
        }
    }
}

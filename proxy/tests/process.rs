//! Process hygiene: after `harden`, the process writes no core and is not dumpable (so its
//! `/proc` memory and environment files belong to root and same-uid ptrace is refused).

use rustix::process::{dumpable_behavior, getrlimit, DumpableBehavior, Resource};

#[test]
fn a_hardened_process_is_not_dumpable_and_writes_no_core() {
    assert!(keyward::process::harden().is_empty(), "hardening failed");
    assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
    let core = getrlimit(Resource::Core);
    assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
}

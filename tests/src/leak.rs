//! The one leak assertion the suites share: no value of `values` in `output`, and a failure
//! that names the kind of value and the lines, with the value itself masked.

/// Fails naming `what` when any of `values` occurs in `output` (never printing the value).
///
/// # Panics
/// When a value is found.
pub fn assert_absent(output: &str, what: &str, values: &[impl AsRef<str>]) {
    for value in values.iter().map(AsRef::as_ref) {
        let leaks: Vec<String> = output
            .lines()
            .filter(|line| line.contains(value))
            .map(|line| line.replace(value, "<REDACTED>"))
            .collect();
        assert!(leaks.is_empty(), "{what} reached the output:\n{}", leaks.join("\n"));
    }
}

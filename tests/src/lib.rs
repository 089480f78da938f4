//! Support for the black-box suites.

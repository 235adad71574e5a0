//! End-to-end tests of lastword: crashing children, agents and collectors as real processes.

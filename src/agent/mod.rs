//! The agent loop that executes a harness: protocol, tools, middleware, completion checks, and
//! the trace it leaves.

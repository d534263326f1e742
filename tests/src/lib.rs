//! Helpers for Larder's end-to-end tests: a real server on a random port
//! against a throw-away PostgreSQL database, and real WebSocket clients.
#![forbid(unsafe_code)]

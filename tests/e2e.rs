//! Black-box tests: each starts the real `berth serve` on 127.0.0.1:0 and talks HTTP to it.
//! One test binary with modules, so it links once. Test names carry the spec endpoint ids.

mod e2e {
    pub mod auth;
    pub mod cli;
    pub mod client;
    pub mod clients;
    pub mod concurrency;
    pub mod gc;
    pub mod harness;
    pub mod hostile;
    pub mod images;
    pub mod limits;
    pub mod listing;
    pub mod manifests;
    pub mod proxy;
    pub mod pull;
    pub mod push;
    pub mod restart;
    pub mod s3;
    pub mod strictness;
}

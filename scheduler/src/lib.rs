//! kiln-scheduler: the engine that advances a workflow run. Pure and synchronous (no async
//! runtime, no I/O, no printing), so the local `kiln run` driver and a future gRPC scheduler
//! drive the same state machine. See docs/engine.md for the rules it applies. `store` keeps
//! the distributed scheduler's durable state (docs/scheduler.md).

pub mod discover;
pub mod drive;
pub mod engine;
pub mod github;
pub mod grpc;
pub mod http;
pub mod request;
pub mod service;
pub mod store;

pub use engine::{
    Dispatch, Engine, EngineError, EngineEvent, EngineOptions, EnvironmentEval, JobCompletion,
    JobReport, LegId, RunReport, RunSpec, StepRecord,
};

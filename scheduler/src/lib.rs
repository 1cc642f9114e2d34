//! kiln-scheduler: the engine that advances a workflow run ([`engine`]: pure and synchronous,
//! no async runtime, no I/O, no printing; docs/engine.md has the rules it applies), and what
//! every way of running a workflow builds around it: the [`request`] (what to run, read from
//! the flags' files), [`discover`]y and selection of the workflows, the [`github`] context
//! from the repository, the local driver ([`drive`], over an executor the binary provides),
//! and the distributed scheduler ([`service`] over the durable [`store`], served by [`grpc`]
//! and [`http`], observed through [`metrics`]; docs/scheduler.md).

pub mod discover;
pub mod drive;
pub mod engine;
pub mod github;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod request;
pub mod service;
pub mod store;

pub use engine::{
    Dispatch, Engine, EngineError, EngineEvent, EngineOptions, EnvironmentEval, JobCompletion,
    JobReport, LegId, RunReport, RunSpec, StepRecord,
};

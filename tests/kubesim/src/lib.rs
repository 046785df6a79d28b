//! kubesim: a simulated Kubernetes cluster for tests and demos.
//!
//! An API server (HTTP/1.1, optional TLS and bearer token) serving
//! namespaces, `batch/v1` Jobs, Pods, Secrets and Events with real
//! Kubernetes semantics, a Job controller, and a kubelet that runs each
//! container's `command`/`args` as a local process (or a scripted behaviour
//! chosen by image name). See `docs/testing.md` for the full story.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kubesim::SimError> {
//! let sim = kubesim::SimCluster::builder().build().start().await?;
//! sim.write_kubeconfig("/tmp/kubesim.kubeconfig", "kubesim")?;
//! println!("API at {}", sim.url());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod clock;
pub mod cluster;
mod controller;
pub mod defaults;
pub mod error;
pub mod faults;
pub mod kinds;
pub mod kubeconfig;
mod kubelet;
pub mod logs;
pub mod object;
pub mod observe;
pub mod patch;
pub mod rbac;
pub mod selector;
mod server;
mod sim;
pub mod store;
mod tls;
pub mod validation;

pub use error::{ApiError, SimError};
pub use faults::FaultConfig;
pub use kinds::Kind;
pub use object::{Object, SimObject};
pub use observe::{RequestRecord, WatchCounters};
pub use rbac::{Rbac, RbacRule, RequestAttributes};
pub use sim::{SimCluster, SimClusterBuilder, SimHandle};
pub use store::{CreatedRecord, DEFAULT_NAMESPACE_UID, KUBE_SYSTEM_NAMESPACE_UID};

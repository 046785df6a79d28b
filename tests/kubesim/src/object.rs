//! [`Object`]: one stored API object, always a k8s-openapi type.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::ApiError;
use crate::kinds::Kind;

/// A stored object (boxed: the types are large and differ in size).
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// `v1` Namespace.
    Namespace(Box<Namespace>),
    /// `batch/v1` Job.
    Job(Box<Job>),
    /// `v1` Pod.
    Pod(Box<Pod>),
    /// `v1` Secret.
    Secret(Box<Secret>),
    /// `v1` Event.
    Event(Box<Event>),
}

impl Object {
    /// The kind of this object.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Job(_) => Kind::Job,
            Object::Pod(_) => Kind::Pod,
            Object::Secret(_) => Kind::Secret,
            Object::Event(_) => Kind::Event,
        }
    }

    /// Object metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Job(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::Event(o) => &o.metadata,
        }
    }

    /// Mutable object metadata.
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::Job(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::Secret(o) => &mut o.metadata,
            Object::Event(o) => &mut o.metadata,
        }
    }

    /// `metadata.name`, empty when unset.
    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// `metadata.namespace`, empty when unset or cluster-scoped.
    pub fn namespace(&self) -> &str {
        self.meta().namespace.as_deref().unwrap_or_default()
    }

    /// `metadata.uid`, empty when unset.
    pub fn uid(&self) -> &str {
        self.meta().uid.as_deref().unwrap_or_default()
    }

    /// The stored resourceVersion as a number (0 when unset or unparsable).
    pub fn resource_version(&self) -> u64 {
        self.meta()
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// JSON as served (k8s-openapi adds `apiVersion` and `kind`).
    pub fn to_value(&self) -> serde_json::Value {
        let r = match self {
            Object::Namespace(o) => serde_json::to_value(o),
            Object::Job(o) => serde_json::to_value(o),
            Object::Pod(o) => serde_json::to_value(o),
            Object::Secret(o) => serde_json::to_value(o),
            Object::Event(o) => serde_json::to_value(o),
        };
        // Serialising these plain data types cannot fail (no maps with non-string keys).
        r.unwrap_or_default()
    }

    /// Parse a request body as an object of `kind`; a body of another kind
    /// or a malformed one is a 400 as on the real server.
    pub fn from_value(kind: Kind, value: serde_json::Value) -> Result<Object, ApiError> {
        fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
            serde_json::from_value(v).map_err(|e| {
                ApiError::bad_request(format!(
                    "the object provided is unrecognized or invalid: {e}"
                ))
            })
        }
        Ok(match kind {
            Kind::Namespace => Object::Namespace(Box::new(parse(value)?)),
            Kind::Job => Object::Job(Box::new(parse(value)?)),
            Kind::Pod => Object::Pod(Box::new(parse(value)?)),
            Kind::Secret => Object::Secret(Box::new(parse(value)?)),
            Kind::Event => Object::Event(Box::new(parse(value)?)),
        })
    }

    /// The `status.phase` field selector value (pods and namespaces).
    pub fn phase(&self) -> Option<&str> {
        match self {
            Object::Pod(p) => p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Object::Namespace(n) => n.status.as_ref().and_then(|s| s.phase.as_deref()),
            _ => None,
        }
    }
}

/// A k8s-openapi type the simulator stores; lets the handle offer typed access.
pub trait SimObject: Sized + Clone {
    /// The kind of this type.
    const KIND: Kind;
    /// Wrap into an [`Object`].
    fn into_object(self) -> Object;
    /// Unwrap from an [`Object`] of the same kind.
    fn from_object(o: &Object) -> Option<Self>;
}

macro_rules! sim_object {
    ($ty:ty, $variant:ident, boxed) => {
        impl SimObject for $ty {
            const KIND: Kind = Kind::$variant;
            fn into_object(self) -> Object {
                Object::$variant(Box::new(self))
            }
            fn from_object(o: &Object) -> Option<Self> {
                match o {
                    Object::$variant(x) => Some((**x).clone()),
                    _ => None,
                }
            }
        }
    };
    ($ty:ty, $variant:ident) => {
        impl SimObject for $ty {
            const KIND: Kind = Kind::$variant;
            fn into_object(self) -> Object {
                Object::$variant(self)
            }
            fn from_object(o: &Object) -> Option<Self> {
                match o {
                    Object::$variant(x) => Some(x.clone()),
                    _ => None,
                }
            }
        }
    };
}

sim_object!(Namespace, Namespace, boxed);
sim_object!(Job, Job, boxed);
sim_object!(Pod, Pod, boxed);
sim_object!(Secret, Secret, boxed);
sim_object!(Event, Event, boxed);

//! The object store: pure synchronous state with Kubernetes semantics
//! (names, uids, resourceVersions, defaulting, validation, deletion, garbage
//! collection, admission, watch history). No I/O and no async here; the
//! [`crate::cluster::Cluster`] wraps it in a lock and fans changes out.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Event, EventSource, Namespace, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::defaults::{apply_defaults, generate_name};
use crate::error::ApiError;
use crate::kinds::Kind;
use crate::object::Object;
use crate::patch::{self, PatchType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::validation::{validate, validate_update};

/// `(namespace, name)`; the namespace is empty for cluster-scoped kinds.
pub type Key = (String, String);

/// Watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    /// Object created.
    Added,
    /// Object updated.
    Modified,
    /// Object removed.
    Deleted,
}

impl ChangeType {
    /// The wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One committed change, as fanned out to watchers.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion this change produced.
    pub rv: u64,
    /// Kind of the object.
    pub kind: Kind,
    /// Event type.
    pub ty: ChangeType,
    /// The object after the change (for `Deleted`: its last state).
    pub object: Arc<Object>,
    /// The object before the change (for selector transitions in watches).
    pub old: Option<Arc<Object>>,
    json: OnceLock<Arc<str>>,
}

impl Change {
    /// The object as JSON, serialised once however many watchers there are.
    pub fn object_json(&self) -> Arc<str> {
        self.json
            .get_or_init(|| Arc::from(self.object.to_value().to_string()))
            .clone()
    }
}

/// `propagationPolicy` of a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Owner goes now, dependents are collected after.
    Background,
    /// Owner stays (finalizer `foregroundDeletion`) until dependents are gone.
    Foreground,
    /// Dependents lose their owner reference and stay.
    Orphan,
}

/// Options of a delete call.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds` (pods only; default the pod's own).
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`; `None` means Background here (see docs/testing.md).
    pub propagation: Option<Propagation>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_rv: Option<String>,
}

/// What a delete did.
#[derive(Clone, Debug)]
pub enum DeleteOutcome {
    /// The object is gone; this was its last state.
    Deleted(Arc<Object>),
    /// The object is being deleted (grace period or finalizers); current state.
    Pending(Arc<Object>),
}

/// A page of a list.
#[derive(Clone, Debug)]
pub struct ListResult {
    /// Matching objects, in key order.
    pub items: Vec<Arc<Object>>,
    /// The store's resourceVersion when listed.
    pub resource_version: u64,
    /// Token for the next page, when `limit` cut the list.
    pub continue_token: Option<String>,
}

/// List parameters.
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    /// Restrict to a namespace.
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Page size.
    pub limit: Option<usize>,
    /// Token from a previous page.
    pub continue_token: Option<String>,
}

/// The simulated etcd + API machinery state.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: HashMap<Kind, BTreeMap<Key, Arc<Object>>>,
    by_uid: HashMap<String, (Kind, Key)>,
    dependents: HashMap<String, BTreeSet<(Kind, Key)>>,
    namespace_counts: HashMap<String, usize>,
    history: HashMap<Kind, VecDeque<Arc<Change>>>,
    compacted: HashMap<Kind, u64>,
    history_limit: usize,
    pending: Vec<Arc<Change>>,
    event_index: HashMap<(String, String, String), Key>,
    quota_exceeded: BTreeSet<String>,
    /// Every Job ever created, for tests that count creations (deleted ones included).
    created_jobs: Vec<CreatedRecord>,
}

/// An object as it was when created: what tests need to count creations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedRecord {
    /// Namespace.
    pub namespace: String,
    /// Name (generated names resolved).
    pub name: String,
    /// uid.
    pub uid: String,
    /// Labels at creation.
    pub labels: BTreeMap<String, String>,
}

/// Uids of the built-in namespaces are fixed so tests and demos can rely on them.
pub const DEFAULT_NAMESPACE_UID: &str = "4f6c3d2a-0000-4000-8000-00000000d0f1";
/// Fixed uid of `kube-system`.
pub const KUBE_SYSTEM_NAMESPACE_UID: &str = "4f6c3d2a-0000-4000-8000-00000000c5e7";

fn now() -> Time {
    Time(crate::clock::now())
}

impl Store {
    /// A store with `default` and `kube-system`, keeping `history_limit`
    /// changes per kind for watch resumption.
    pub fn new(history_limit: usize) -> Self {
        let mut s = Store {
            rv: 1,
            objects: HashMap::new(),
            by_uid: HashMap::new(),
            dependents: HashMap::new(),
            namespace_counts: HashMap::new(),
            history: HashMap::new(),
            compacted: HashMap::new(),
            history_limit: history_limit.max(16),
            pending: Vec::new(),
            event_index: HashMap::new(),
            quota_exceeded: BTreeSet::new(),
            created_jobs: Vec::new(),
        };
        for (name, uid) in [
            ("default", DEFAULT_NAMESPACE_UID),
            ("kube-system", KUBE_SYSTEM_NAMESPACE_UID),
        ] {
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    uid: Some(uid.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            // Built-ins are valid by construction; a failure here would be a bug
            // in defaulting, and the cluster simply starts without them.
            if let Err(e) = s.create_inner(Object::Namespace(Box::new(ns)), Some(uid)) {
                tracing::error!(error = %e, "could not create built-in namespace");
            }
        }
        s.pending.clear();
        s
    }

    /// Current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Changes committed since the last call (the cluster fans them out).
    pub fn take_pending(&mut self) -> Vec<Arc<Change>> {
        std::mem::take(&mut self.pending)
    }

    /// Make pod creation in `namespace` fail with an `exceeded quota` 403.
    pub fn set_quota_exceeded(&mut self, namespace: &str, exceeded: bool) {
        if exceeded {
            self.quota_exceeded.insert(namespace.to_string());
        } else {
            self.quota_exceeded.remove(namespace);
        }
    }

    fn bucket(&self, kind: Kind) -> Option<&BTreeMap<Key, Arc<Object>>> {
        self.objects.get(&kind)
    }

    /// Get one object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<Object>> {
        let ns = if kind.namespaced() { namespace } else { "" };
        self.bucket(kind)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Get an object by uid.
    pub fn get_by_uid(&self, uid: &str) -> Option<Arc<Object>> {
        let (kind, key) = self.by_uid.get(uid)?;
        self.bucket(*kind)?.get(key).cloned()
    }

    /// Objects whose ownerReferences name `owner_uid`.
    pub fn dependents_of(&self, owner_uid: &str) -> Vec<Arc<Object>> {
        self.dependents
            .get(owner_uid)
            .into_iter()
            .flatten()
            .filter_map(|(k, key)| self.bucket(*k)?.get(key).cloned())
            .collect()
    }

    /// Whether a namespace exists.
    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.get(Kind::Namespace, "", ns).is_some()
    }

    /// Count of stored objects of a kind (all namespaces).
    pub fn count(&self, kind: Kind) -> usize {
        self.bucket(kind).map_or(0, BTreeMap::len)
    }

    /// List with selectors and paging.
    pub fn list(&self, kind: Kind, params: &ListParams) -> Result<ListResult, ApiError> {
        let after: Option<Key> = match params.continue_token.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => Some(decode_continue(t)?),
            None => None,
        };
        let mut items = Vec::new();
        let mut continue_token = None;
        let Some(bucket) = self.bucket(kind) else {
            return Ok(ListResult {
                items,
                resource_version: self.rv,
                continue_token,
            });
        };
        let ns = params.namespace.as_deref().filter(|_| kind.namespaced());
        let start: Key = match (&after, ns) {
            (Some(k), _) => k.clone(),
            (None, Some(ns)) => (ns.to_string(), String::new()),
            (None, None) => (String::new(), String::new()),
        };
        let limit = params.limit.filter(|l| *l > 0);
        for (key, obj) in bucket.range(start..) {
            if after.as_ref() == Some(key) {
                continue;
            }
            if let Some(ns) = ns
                && key.0 != ns
            {
                break;
            }
            if !params.labels.matches(obj.meta().labels.as_ref()) || !params.fields.matches(obj) {
                continue;
            }
            if let Some(l) = limit
                && items.len() == l
            {
                continue_token = items
                    .last()
                    .map(|o: &Arc<Object>| encode_continue(self.rv, o.namespace(), o.name()));
                break;
            }
            items.push(obj.clone());
        }
        Ok(ListResult {
            items,
            resource_version: self.rv,
            continue_token,
        })
    }

    /// Create with generateName, defaulting, validation and admission.
    pub fn create(&mut self, obj: Object) -> Result<Arc<Object>, ApiError> {
        self.create_inner(obj, None)
    }

    fn create_inner(
        &mut self,
        mut obj: Object,
        fixed_uid: Option<&str>,
    ) -> Result<Arc<Object>, ApiError> {
        let kind = obj.kind();
        let ns = obj.namespace().to_string();
        if kind.namespaced() {
            match self.get(Kind::Namespace, "", &ns) {
                None => return Err(ApiError::not_found(Kind::Namespace, &ns)),
                Some(n) if n.meta().deletion_timestamp.is_some() => {
                    return Err(ApiError::forbidden_message(
                        kind,
                        obj.name(),
                        format!(
                            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            kind.qualified_resource(),
                            obj.name()
                        ),
                    ));
                }
                Some(_) => {}
            }
        } else {
            obj.meta_mut().namespace = None;
        }
        let has_name = obj.meta().name.as_deref().is_some_and(|n| !n.is_empty());
        if !has_name
            && let Some(prefix) = obj.meta().generate_name.clone().filter(|g| !g.is_empty())
        {
            // Retry a few times on the (unlikely) collision, as the real server
            // returns AlreadyExists only after its own retries.
            let mut name = generate_name(&prefix);
            for _ in 0..8 {
                if self.get(kind, &ns, &name).is_none() {
                    break;
                }
                name = generate_name(&prefix);
            }
            obj.meta_mut().name = Some(name);
        }
        let uid = fixed_uid.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        {
            let m = obj.meta_mut();
            m.uid = Some(uid.clone());
            m.creation_timestamp = Some(now());
            m.generation = Some(1);
            m.deletion_timestamp = None;
            m.deletion_grace_period_seconds = None;
            m.resource_version = None;
            m.managed_fields = None;
        }
        apply_defaults(&mut obj, &uid);
        validate(&obj)?;
        let name = obj.name().to_string();
        if self.get(kind, &ns, &name).is_some() {
            return Err(ApiError::already_exists(kind, &name));
        }
        if kind == Kind::Pod && self.quota_exceeded.contains(&ns) {
            let used = self.count_in_namespace(Kind::Pod, &ns);
            return Err(ApiError::forbidden_message(
                kind,
                &name,
                format!(
                    "pods \"{name}\" is forbidden: exceeded quota: kubesim-quota, requested: pods=1, used: pods={used}, limited: pods={used}"
                ),
            ));
        }
        if kind == Kind::Job {
            self.created_jobs.push(CreatedRecord {
                namespace: ns.clone(),
                name: name.clone(),
                uid: uid.clone(),
                labels: obj.meta().labels.clone().unwrap_or_default(),
            });
        }
        Ok(self.insert(obj, ChangeType::Added, None))
    }

    /// Every Job ever created, oldest first (deleted ones included).
    pub fn created_jobs(&self) -> &[CreatedRecord] {
        &self.created_jobs
    }

    fn count_in_namespace(&self, kind: Kind, ns: &str) -> usize {
        self.bucket(kind).map_or(0, |b| {
            b.range((ns.to_string(), String::new())..)
                .take_while(|(k, _)| k.0 == ns)
                .count()
        })
    }

    /// Store `obj` with a fresh resourceVersion and record the change.
    fn insert(&mut self, mut obj: Object, ty: ChangeType, old: Option<Arc<Object>>) -> Arc<Object> {
        self.rv += 1;
        obj.meta_mut().resource_version = Some(self.rv.to_string());
        let kind = obj.kind();
        let key = (obj.namespace().to_string(), obj.name().to_string());
        let uid = obj.uid().to_string();
        if let Some(o) = &old {
            self.unindex_owners(o, kind, &key);
        }
        for r in obj.meta().owner_references.iter().flatten() {
            self.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert((kind, key.clone()));
        }
        self.by_uid.insert(uid, (kind, key.clone()));
        if ty == ChangeType::Added && kind.namespaced() {
            *self.namespace_counts.entry(key.0.clone()).or_default() += 1;
        }
        let obj = Arc::new(obj);
        self.objects
            .entry(kind)
            .or_default()
            .insert(key, obj.clone());
        self.record(kind, ty, obj.clone(), old);
        obj
    }

    fn unindex_owners(&mut self, o: &Object, kind: Kind, key: &Key) {
        for r in o.meta().owner_references.iter().flatten() {
            if let Some(set) = self.dependents.get_mut(&r.uid) {
                set.remove(&(kind, key.clone()));
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
        }
    }

    fn record(
        &mut self,
        kind: Kind,
        ty: ChangeType,
        object: Arc<Object>,
        old: Option<Arc<Object>>,
    ) {
        let change = Arc::new(Change {
            rv: self.rv,
            kind,
            ty,
            object,
            old,
            json: OnceLock::new(),
        });
        let h = self.history.entry(kind).or_default();
        h.push_back(change.clone());
        while h.len() > self.history_limit {
            if let Some(gone) = h.pop_front() {
                self.compacted.insert(kind, gone.rv);
            }
        }
        self.pending.push(change);
    }

    /// Changes of `kind` after `rv`, or 410 Gone when some were compacted away.
    pub fn changes_since(&self, kind: Kind, rv: u64) -> Result<Vec<Arc<Change>>, ApiError> {
        let compacted = self.compacted.get(&kind).copied().unwrap_or(0);
        if rv < compacted {
            return Err(ApiError::gone(rv, compacted + 1));
        }
        Ok(self
            .history
            .get(&kind)
            .into_iter()
            .flatten()
            .filter(|c| c.rv > rv)
            .cloned()
            .collect())
    }

    /// Oldest resourceVersion a watch of `kind` can resume from.
    pub fn oldest_resumable(&self, kind: Kind) -> u64 {
        self.compacted.get(&kind).copied().unwrap_or(0)
    }

    /// Remove an object for good, cascading garbage collection.
    fn remove(&mut self, kind: Kind, key: &Key) -> Option<Arc<Object>> {
        let old = self.objects.get_mut(&kind)?.remove(key)?;
        self.rv += 1;
        let mut last = (*old).clone();
        last.meta_mut().resource_version = Some(self.rv.to_string());
        let last = Arc::new(last);
        self.unindex_owners(&old, kind, key);
        self.by_uid.remove(old.uid());
        if kind == Kind::Event {
            self.event_index.retain(|_, v| v != key);
        }
        self.record(kind, ChangeType::Deleted, last.clone(), Some(old.clone()));
        if kind.namespaced()
            && let Some(c) = self.namespace_counts.get_mut(&key.0)
        {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.namespace_counts.remove(&key.0);
                self.maybe_finish_namespace(&key.0.clone());
            }
        }
        // Garbage collection: dependents whose owners are all gone follow.
        let uid = old.uid().to_string();
        for dep in self.dependents_of(&uid) {
            let other_owner_alive = dep
                .meta()
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid != uid && self.by_uid.contains_key(&r.uid));
            if !other_owner_alive {
                let _ = self.delete(
                    dep.kind(),
                    dep.namespace(),
                    dep.name(),
                    &DeleteOptions {
                        propagation: Some(Propagation::Background),
                        ..Default::default()
                    },
                );
            }
        }
        // Foreground owners waiting for this dependent may now be done.
        for r in old.meta().owner_references.iter().flatten() {
            self.maybe_finish_foreground(&r.uid);
        }
        Some(last)
    }

    fn maybe_finish_foreground(&mut self, owner_uid: &str) {
        let Some(owner) = self.get_by_uid(owner_uid) else {
            return;
        };
        let waiting = owner.meta().deletion_timestamp.is_some()
            && owner
                .meta()
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == "foregroundDeletion");
        if !waiting
            || self
                .dependents
                .get(owner_uid)
                .is_some_and(|d| !d.is_empty())
        {
            return;
        }
        let mut o = (*owner).clone();
        if let Some(f) = o.meta_mut().finalizers.as_mut() {
            f.retain(|f| f != "foregroundDeletion");
        }
        self.store_or_finish(o, owner);
    }

    fn maybe_finish_namespace(&mut self, ns: &str) {
        if let Some(n) = self.get(Kind::Namespace, "", ns)
            && n.meta().deletion_timestamp.is_some()
        {
            self.remove(Kind::Namespace, &(String::new(), ns.to_string()));
        }
    }

    /// Store an updated object, or remove it when it was being deleted and
    /// its last finalizer just went.
    fn store_or_finish(&mut self, new: Object, old: Arc<Object>) -> Arc<Object> {
        let key = (new.namespace().to_string(), new.name().to_string());
        let kind = new.kind();
        let done = new.meta().deletion_timestamp.is_some()
            && new.meta().finalizers.as_ref().is_none_or(Vec::is_empty)
            && !(kind == Kind::Pod && pod_needs_kubelet(&new));
        if done {
            self.remove(kind, &key).unwrap_or(old)
        } else {
            self.insert(new, ChangeType::Modified, Some(old))
        }
    }

    /// PUT: replace the object (or its status when `status_only`).
    pub fn replace(&mut self, new: Object, status_only: bool) -> Result<Arc<Object>, ApiError> {
        let kind = new.kind();
        let name = new.name().to_string();
        let ns = if kind.namespaced() {
            new.namespace().to_string()
        } else {
            String::new()
        };
        let old = self
            .get(kind, &ns, &name)
            .ok_or_else(|| ApiError::not_found(kind, &name))?;
        if let Some(rv) = new
            .meta()
            .resource_version
            .as_deref()
            .filter(|r| !r.is_empty())
            && rv != old.meta().resource_version.as_deref().unwrap_or_default()
        {
            return Err(ApiError::conflict(kind, &name));
        }
        if let Some(uid) = new.meta().uid.as_deref().filter(|u| !u.is_empty())
            && uid != old.uid()
        {
            return Err(ApiError::conflict(kind, &name));
        }
        let mut merged = if status_only {
            let mut m = (*old).clone();
            copy_status(&new, &mut m);
            m
        } else {
            let mut m = new;
            copy_status(&old, &mut m);
            m
        };
        {
            let om = old.meta();
            let m = merged.meta_mut();
            m.uid = om.uid.clone();
            m.namespace = om.namespace.clone();
            m.creation_timestamp = om.creation_timestamp.clone();
            m.deletion_timestamp = om.deletion_timestamp.clone();
            m.deletion_grace_period_seconds = om.deletion_grace_period_seconds;
            m.generation = om.generation;
            m.generate_name = om.generate_name.clone();
            m.resource_version = om.resource_version.clone();
            m.managed_fields = None;
        }
        if spec_differs(&old, &merged) {
            let g = old.meta().generation.unwrap_or(1) + 1;
            merged.meta_mut().generation = Some(g);
        }
        validate_update(&old, &merged)?;
        if merged == *old {
            return Ok(old);
        }
        Ok(self.store_or_finish(merged, old))
    }

    /// PATCH: apply a patch to the current JSON, then replace.
    pub fn patch(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        ty: PatchType,
        body: &serde_json::Value,
        status_only: bool,
    ) -> Result<Arc<Object>, ApiError> {
        let ns = if kind.namespaced() { namespace } else { "" };
        let old = self
            .get(kind, ns, name)
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        let mut value = old.to_value();
        // A patch carries a resourceVersion only when the client wants the
        // optimistic-concurrency check; otherwise it applies to the latest.
        let wants_rv = body.pointer("/metadata/resourceVersion").is_some();
        patch::apply(ty, &mut value, body)?;
        if !wants_rv && let Some(m) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.remove("resourceVersion");
        }
        let mut new = Object::from_value(kind, value)?;
        if new.name() != name {
            return Err(ApiError::bad_request(
                "the name of the object in the patch does not match",
            ));
        }
        if kind.namespaced() {
            new.meta_mut().namespace = Some(ns.to_string());
        }
        self.replace(new, status_only)
    }

    /// DELETE with grace periods, finalizers and propagation.
    pub fn delete(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<DeleteOutcome, ApiError> {
        let ns = if kind.namespaced() { namespace } else { "" };
        let key = (ns.to_string(), name.to_string());
        let old = self
            .get(kind, ns, name)
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        if let Some(uid) = &opts.precondition_uid
            && uid != old.uid()
        {
            return Err(ApiError::conflict(kind, name));
        }
        if let Some(rv) = &opts.precondition_rv
            && Some(rv.as_str()) != old.meta().resource_version.as_deref()
        {
            return Err(ApiError::conflict(kind, name));
        }
        let propagation = opts.propagation.unwrap_or(Propagation::Background);
        let mut obj = (*old).clone();
        let already_deleting = old.meta().deletion_timestamp.is_some();

        if kind == Kind::Namespace {
            if !already_deleting {
                obj.meta_mut().deletion_timestamp = Some(now());
                if let Object::Namespace(n) = &mut obj {
                    n.status.get_or_insert_with(Default::default).phase =
                        Some("Terminating".into());
                }
                let cur = self.insert(obj, ChangeType::Modified, Some(old));
                for k in Kind::ALL.into_iter().filter(|k| k.namespaced()) {
                    let keys: Vec<Key> = self
                        .bucket(k)
                        .map(|b| {
                            b.range((name.to_string(), String::new())..)
                                .take_while(|(kk, _)| kk.0 == name)
                                .map(|(kk, _)| kk.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    for kk in keys {
                        let _ = self.delete(k, &kk.0, &kk.1, &DeleteOptions::default());
                    }
                }
                if self.namespace_counts.get(name).copied().unwrap_or(0) == 0 {
                    return Ok(DeleteOutcome::Deleted(
                        self.remove(kind, &key).unwrap_or(cur),
                    ));
                }
                return Ok(DeleteOutcome::Pending(
                    self.get(kind, "", name).unwrap_or(cur),
                ));
            }
            return Ok(DeleteOutcome::Pending(old));
        }

        if propagation == Propagation::Orphan {
            let uid = old.uid().to_string();
            for dep in self.dependents_of(&uid) {
                let mut d = (*dep).clone();
                if let Some(refs) = d.meta_mut().owner_references.as_mut() {
                    refs.retain(|r| r.uid != uid);
                    if refs.is_empty() {
                        d.meta_mut().owner_references = None;
                    }
                }
                self.insert(d, ChangeType::Modified, Some(dep));
            }
        }

        let has_finalizers = obj
            .meta()
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty());
        let has_dependents = self
            .dependents
            .get(old.uid())
            .is_some_and(|d| !d.is_empty());
        let foreground = propagation == Propagation::Foreground && has_dependents;

        // Pods bound to the node terminate through the kubelet, which
        // removes them once the containers are dead (or at once with grace 0).
        let grace = opts.grace_period_seconds.or_else(|| match &obj {
            Object::Pod(p) => p
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds),
            _ => None,
        });
        let graceful_pod = kind == Kind::Pod && pod_needs_kubelet(&obj) && grace.unwrap_or(0) > 0;

        if !has_finalizers && !foreground && !graceful_pod {
            let last = self
                .remove(kind, &key)
                .ok_or_else(|| ApiError::not_found(kind, name))?;
            return Ok(DeleteOutcome::Deleted(last));
        }

        if !already_deleting || graceful_pod {
            let m = obj.meta_mut();
            let when = if graceful_pod {
                let secs = grace.unwrap_or(0);
                let at = crate::clock::now()
                    .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
                    .unwrap_or_else(|_| crate::clock::now());
                Some(Time(at))
            } else {
                Some(now())
            };
            if m.deletion_timestamp.is_none() || graceful_pod {
                // A shorter grace on a second delete shortens the deadline; a
                // longer one never extends it (as real).
                let shorter = m
                    .deletion_grace_period_seconds
                    .is_none_or(|g| grace.unwrap_or(0) < g);
                if m.deletion_timestamp.is_none() || shorter {
                    m.deletion_timestamp = when;
                    if graceful_pod {
                        m.deletion_grace_period_seconds = grace;
                    }
                }
            }
            if foreground {
                let f = m.finalizers.get_or_insert_with(Vec::new);
                if !f.iter().any(|x| x == "foregroundDeletion") {
                    f.push("foregroundDeletion".into());
                }
            }
        }
        let cur = if obj == *old {
            old.clone()
        } else {
            self.insert(obj, ChangeType::Modified, Some(old))
        };
        if foreground {
            let uid = cur.uid().to_string();
            for dep in self.dependents_of(&uid) {
                let _ = self.delete(
                    dep.kind(),
                    dep.namespace(),
                    dep.name(),
                    &DeleteOptions {
                        propagation: Some(Propagation::Foreground),
                        ..Default::default()
                    },
                );
            }
            self.maybe_finish_foreground(&uid);
        }
        match self.get(kind, ns, name) {
            Some(o) => Ok(DeleteOutcome::Pending(o)),
            None => Ok(DeleteOutcome::Deleted(cur)),
        }
    }

    /// The kubelet's final removal of a pod whose containers are dead.
    pub fn finalize_pod(&mut self, namespace: &str, name: &str, uid: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(p) = self.get(Kind::Pod, namespace, name)
            && p.uid() == uid
        {
            let blocked = p.meta().finalizers.as_ref().is_some_and(|f| !f.is_empty());
            if !blocked {
                self.remove(Kind::Pod, &key);
            }
        }
    }

    /// Controller/kubelet write: mutate in place without validation; bumps
    /// the resourceVersion only when something changed. `uid` guards against
    /// writing to a newer object of the same name.
    pub fn update_with(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        uid: &str,
        f: impl FnOnce(&mut Object),
    ) -> Option<Arc<Object>> {
        let old = self.get(kind, namespace, name)?;
        if old.uid() != uid {
            return None;
        }
        let mut new = (*old).clone();
        f(&mut new);
        if new == *old {
            return Some(old);
        }
        Some(self.insert(new, ChangeType::Modified, Some(old)))
    }

    /// Record a core Event about `involved`, folding repeats into `count`.
    pub fn record_event(
        &mut self,
        involved: &Object,
        type_: &str,
        reason: &str,
        message: &str,
        component: &str,
    ) {
        let ns = if involved.kind().namespaced() {
            involved.namespace()
        } else {
            "default"
        };
        let dedupe = (
            involved.uid().to_string(),
            reason.to_string(),
            message.to_string(),
        );
        let t = now();
        if let Some(key) = self.event_index.get(&dedupe).cloned()
            && let Some(old) = self.bucket(Kind::Event).and_then(|b| b.get(&key)).cloned()
        {
            let mut e = (*old).clone();
            if let Object::Event(ev) = &mut e {
                ev.count = Some(ev.count.unwrap_or(1) + 1);
                ev.last_timestamp = Some(t);
            }
            self.insert(e, ChangeType::Modified, Some(old));
            return;
        }
        let nanos = crate::clock::now().as_nanosecond();
        let name = format!("{}.{:x}", involved.name(), nanos);
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.to_string()),
                uid: Some(uuid::Uuid::new_v4().to_string()),
                creation_timestamp: Some(t.clone()),
                generation: Some(1),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(involved.kind().api_version().into()),
                kind: Some(involved.kind().kind().into()),
                name: Some(involved.name().into()),
                namespace: involved
                    .kind()
                    .namespaced()
                    .then(|| involved.namespace().to_string()),
                uid: Some(involved.uid().into()),
                resource_version: involved.meta().resource_version.clone(),
                field_path: None,
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.into()),
            source: Some(EventSource {
                component: Some(component.into()),
                host: None,
            }),
            reporting_component: Some(component.into()),
            reporting_instance: Some(component.into()),
            first_timestamp: Some(t.clone()),
            last_timestamp: Some(t),
            count: Some(1),
            ..Default::default()
        };
        self.insert(Object::Event(Box::new(ev)), ChangeType::Added, None);
        self.event_index.insert(dedupe, (ns.to_string(), name));
    }
}

/// A pod the kubelet must stop before it can go: bound and not finished.
pub fn pod_needs_kubelet(obj: &Object) -> bool {
    let Object::Pod(p) = obj else { return false };
    let bound = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    bound && !matches!(phase, "Succeeded" | "Failed")
}

fn copy_status(from: &Object, to: &mut Object) {
    match (from, to) {
        (Object::Job(f), Object::Job(t)) => t.status = f.status.clone(),
        (Object::Pod(f), Object::Pod(t)) => t.status = f.status.clone(),
        (Object::Namespace(f), Object::Namespace(t)) => t.status = f.status.clone(),
        _ => {}
    }
}

fn spec_differs(a: &Object, b: &Object) -> bool {
    match (a, b) {
        (Object::Job(x), Object::Job(y)) => x.spec != y.spec,
        (Object::Pod(x), Object::Pod(y)) => x.spec != y.spec,
        (Object::Namespace(x), Object::Namespace(y)) => x.spec != y.spec,
        (Object::Secret(x), Object::Secret(y)) => x.data != y.data || x.type_ != y.type_,
        _ => false,
    }
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    let raw = serde_json::json!({"rv": rv, "ns": ns, "name": name}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Result<Key, ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid: illegal base64 data");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let ns = v.get("ns").and_then(|x| x.as_str()).ok_or_else(bad)?;
    let name = v.get("name").and_then(|x| x.as_str()).ok_or_else(bad)?;
    Ok((ns.to_string(), name.to_string()))
}

//! Container metadata from the runtimes (name, image, labels, ...), by
//! container id, shared between the runtime watchers that fill it and the
//! source that attaches it to events.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use vigil_event::Container;

#[derive(Default)]
pub struct ContainerCache {
    by_id: RwLock<HashMap<String, Arc<Container>>>,
}

impl ContainerCache {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn get(&self, id: &str) -> Option<Arc<Container>> {
        self.by_id.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    pub fn insert(&self, c: Container) {
        self.by_id.write().unwrap_or_else(|e| e.into_inner()).insert(c.id.clone(), Arc::new(c));
    }

    pub fn remove(&self, id: &str) {
        self.by_id.write().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    pub fn len(&self) -> usize {
        self.by_id.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every container known, sorted by runtime then name.
    pub fn all(&self) -> Vec<Arc<Container>> {
        let mut v: Vec<_> = self.by_id.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        v.sort_by(|a, b| (a.runtime.name(), &a.name).cmp(&(b.runtime.name(), &b.name)));
        v
    }
}

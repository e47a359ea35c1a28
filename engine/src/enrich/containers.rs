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

    /// Replaces what is known of `runtime`'s containers with `listed` (a
    /// full listing): containers removed while a watcher was disconnected go.
    pub fn replace_all(&self, runtime: vigil_event::Runtime, listed: Vec<Container>) {
        let mut by_id = self.by_id.write().unwrap_or_else(|e| e.into_inner());
        by_id.retain(|_, c| c.runtime != runtime);
        by_id.extend(listed.into_iter().map(|c| (c.id.clone(), Arc::new(c))));
    }
}

#[cfg(test)]
mod tests {
    use vigil_event::Runtime;

    use super::*;

    fn container(id: &str, runtime: Runtime) -> Container {
        Container { id: id.into(), runtime, ..Default::default() }
    }

    #[test]
    fn a_relisting_forgets_what_is_gone_from_that_runtime_only() {
        let cache = ContainerCache::new();
        cache.insert(container("a", Runtime::Docker));
        cache.insert(container("p", Runtime::Podman));
        cache.replace_all(Runtime::Docker, vec![container("b", Runtime::Docker)]);
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some());
        assert!(cache.get("p").is_some());
    }
}

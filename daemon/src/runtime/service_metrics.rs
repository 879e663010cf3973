//! Tasks.Metrics: statistics of live tasks, filtered as containerd filters them.

use super::*;

/// What containerd's Metrics filters see of a task.
struct MetricFields<'a> {
    id: &'a str,
    namespace: &'a str,
    runtime: &'a str,
}

impl Adaptor for MetricFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        let v = match (path.first()?.as_str(), path.len()) {
            ("id", 1) => self.id,
            ("namespace", 1) => self.namespace,
            ("runtime", 1) => self.runtime,
            _ => return None,
        };
        Some(v.to_string())
    }
}

impl<R: TaskRuntime> TaskService<R> {
    /// Statistics of the live tasks of a namespace that `filter` (on id,
    /// namespace and runtime, as containerd's) matches, by id.
    pub async fn metrics(&self, ns: &str, filter: &Filter) -> Result<Vec<Metric>> {
        let mut live: Vec<(String, Arc<Handle<R::Task>>)> = self
            .reg()
            .iter()
            .filter_map(|((n, id), e)| match e {
                Entry::Live(h) if n == ns => Some((id.clone(), h.clone())),
                _ => None,
            })
            .collect();
        live.sort_by(|a, b| a.0.cmp(&b.0));
        let mut metrics = Vec::new();
        for (id, h) in live {
            let runtime = self
                .containers
                .get(ns, &id)
                .map(|c| c.record.runtime)
                .unwrap_or_default();
            let fields = MetricFields {
                id: &id,
                namespace: ns,
                runtime: &runtime,
            };
            if !filter.matches(&fields) {
                continue;
            }
            match self.runtime.stats(&h.task).await {
                Ok(data) => metrics.push(Metric {
                    timestamp: Some(timestamp(now())),
                    id,
                    data,
                }),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(metrics)
    }
}

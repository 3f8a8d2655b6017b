//! Several playbook runners sharing the work: a [`RunnerPool`] sends the runs
//! of a host to one runner, chosen by rendezvous (highest random weight)
//! hashing of the host over the ready runners. While that runner stays ready,
//! every run of the host goes to it (so its "one run per host" queue stays
//! local); when it goes away, only its hosts move, each to the runner that
//! ranks next for it, and back when it returns.
//!
//! Membership comes from one of two sources: a fixed list of URLs whose
//! `/healthz` is probed ([`RunnerPool::probe`], standalone), or the runner
//! Service's EndpointSlices (`crate::controller::runners`, in a cluster),
//! through [`RunnerPool::set_members`].
//!
//! A run is followed at the runner it went to, named in its [`RunHandle`]
//! (`status.run.runner`). A runner that stopped answering is given
//! [`RunnerPool::gone_after`] to come back (a restarted runner reads its run
//! records: a finished run keeps its result, a run it lost is reported
//! lost); past that, its runs are reported unknown and are started again
//! elsewhere. Runs of one host never overlap even then: the playbooks hold a
//! lock on the host itself (`playbooks/tasks/host_lock.yml`).
//!
//! [`RunHandle`]: crate::controller::server::provisioner::RunHandle

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use sha2::{Digest, Sha256};

use super::client::{ClientError, RunnerClient};

/// One runner the pool knows.
#[derive(Clone, Debug)]
struct Member {
    url: String,
    client: RunnerClient,
    ready: bool,
    /// Since when it has not been ready (or answered).
    unready_since: Option<Instant>,
}

/// A runner as a membership source reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSpec {
    /// Stable name (the Pod name of a StatefulSet replica, or the URL).
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Whether it may take new runs.
    pub ready: bool,
}

/// The runners and which one serves which host.
#[derive(Debug)]
pub struct RunnerPool {
    token: String,
    members: RwLock<BTreeMap<String, Member>>,
    /// Whether a membership source has spoken (until then, no runner is
    /// known to be gone).
    synced: AtomicBool,
    /// How long a runner that stopped answering is waited for before its runs
    /// are reported unknown (and redone elsewhere).
    pub gone_after: Duration,
}

/// The rendezvous weight of `runner` for `host`: the first 8 bytes of
/// SHA-256 over both (stable across processes and versions).
pub fn weight(runner: &str, host: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(runner.as_bytes());
    h.update([0u8]);
    h.update(host.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The key runs of one target share: `host:port`.
pub fn host_key(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

impl RunnerPool {
    /// An empty pool; runners authenticate with `token`.
    pub fn new(token: &str) -> Arc<RunnerPool> {
        Arc::new(RunnerPool {
            token: token.to_string(),
            members: RwLock::new(BTreeMap::new()),
            synced: AtomicBool::new(false),
            gone_after: Duration::from_secs(30),
        })
    }

    /// Sets [`RunnerPool::gone_after`] (on a pool not shared yet).
    pub fn with_gone_after(mut self: Arc<Self>, gone_after: Duration) -> Arc<Self> {
        if let Some(pool) = Arc::get_mut(&mut self) {
            pool.gone_after = gone_after;
        }
        self
    }

    /// A pool of fixed runners named by their URLs, all taken as ready until
    /// a probe says otherwise.
    pub fn from_urls(urls: &[String], token: &str) -> Result<Arc<RunnerPool>, ClientError> {
        let pool = RunnerPool::new(token);
        let specs = urls
            .iter()
            .map(|u| MemberSpec {
                name: u.clone(),
                url: u.clone(),
                ready: true,
            })
            .collect::<Vec<_>>();
        pool.set_members(&specs)?;
        Ok(pool)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Member>> {
        self.members.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Member>> {
        self.members.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the membership: runners absent from `specs` are kept (their
    /// runs are still followed) but are no longer ready.
    pub fn set_members(&self, specs: &[MemberSpec]) -> Result<(), ClientError> {
        let now = Instant::now();
        let mut members = self.write();
        self.synced.store(true, Ordering::SeqCst);
        for s in specs {
            match members.get_mut(&s.name) {
                Some(m) if m.url == s.url => mark(m, s.ready, now),
                _ => {
                    let mut m = Member {
                        url: s.url.clone(),
                        client: RunnerClient::new(&s.url, &self.token)?,
                        ready: false,
                        unready_since: Some(now),
                    };
                    mark(&mut m, s.ready, now);
                    members.insert(s.name.clone(), m);
                }
            }
        }
        let gone: Vec<String> = members
            .keys()
            .filter(|n| !specs.iter().any(|s| &s.name == *n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(m) = members.get_mut(&name) {
                mark(m, false, now);
            }
        }
        Ok(())
    }

    /// Probes every runner's `/healthz` once and records which are ready.
    pub async fn probe(&self) {
        let members: Vec<(String, RunnerClient)> = self
            .read()
            .iter()
            .map(|(n, m)| (n.clone(), m.client.clone()))
            .collect();
        let results = futures::future::join_all(members.iter().map(|(_, c)| c.healthy())).await;
        let now = Instant::now();
        let mut w = self.write();
        for ((name, _), ok) in members.iter().zip(results) {
            if let Some(m) = w.get_mut(name) {
                mark(m, ok, now);
            }
        }
    }

    /// Probes every `every` until the process ends.
    pub fn spawn_probe(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let pool = self.clone();
        tokio::spawn(async move {
            loop {
                pool.probe().await;
                tokio::time::sleep(every).await;
            }
        })
    }

    /// The names of the ready runners.
    pub fn ready(&self) -> Vec<String> {
        self.read()
            .iter()
            .filter(|(_, m)| m.ready)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The runner that serves `host` now (highest weight among the ready
    /// runners), with its client.
    pub fn pick(&self, host: &str) -> Option<(String, RunnerClient)> {
        self.read()
            .iter()
            .filter(|(_, m)| m.ready)
            .max_by_key(|(n, _)| (weight(n, host), (*n).clone()))
            .map(|(n, m)| (n.clone(), m.client.clone()))
    }

    /// The client of a known runner, and whether it has been away longer
    /// than [`RunnerPool::gone_after`].
    pub fn member(&self, name: &str) -> Option<(RunnerClient, bool)> {
        self.read().get(name).map(|m| {
            let gone = m
                .unready_since
                .is_some_and(|t| t.elapsed() >= self.gone_after);
            (m.client.clone(), gone)
        })
    }

    /// Records that a call to `name` failed to reach it (it is not ready
    /// until it answers again) or reached it.
    pub fn reached(&self, name: &str, ok: bool) {
        if let Some(m) = self.write().get_mut(name) {
            mark(m, ok, Instant::now());
        }
    }

    /// Whether the membership is known yet.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// A client for `url` with the pool's token (a runner named by a URL the
    /// pool does not list, e.g. recorded before the pool was configured).
    pub fn client_for(&self, url: &str) -> Result<RunnerClient, ClientError> {
        RunnerClient::new(url, &self.token)
    }

    /// The URL of a known runner.
    pub fn url(&self, name: &str) -> Option<String> {
        self.read().get(name).map(|m| m.url.clone())
    }
}

/// The runners an EndpointSlice lists: one per endpoint, named by its Pod
/// (stable for a StatefulSet replica), reached at its first address on the
/// slice's `http` port (or its first port); ready unless its `ready`
/// condition is false.
pub fn members_of(slice: &k8s_openapi::api::discovery::v1::EndpointSlice) -> Vec<MemberSpec> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or_else(|| ports.first())
        .and_then(|p| p.port);
    let Some(port) = port else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .filter_map(|e| {
            let address = e.addresses.first()?;
            let host = if address.contains(':') {
                format!("[{address}]")
            } else {
                address.clone()
            };
            let name = e
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .or_else(|| e.hostname.clone())
                .unwrap_or_else(|| address.clone());
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            Some(MemberSpec {
                name,
                url: format!("http://{host}:{port}"),
                ready,
            })
        })
        .collect()
}

/// Keeps the pool's membership to the ready endpoints of `service` (in
/// `namespace`), from a watch of its EndpointSlices (label
/// `kubernetes.io/service-name`); the membership is applied again every few
/// seconds, so a runner marked unreachable by a failed call is ready again
/// while its endpoint is.
pub fn follow_endpoint_slices(
    pool: Arc<RunnerPool>,
    client: kube::Client,
    namespace: &str,
    service: &str,
) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, namespace);
    let config =
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
    let service = service.to_string();
    tokio::spawn(async move {
        let (reader, writer) = reflector::store();
        let stream = reflector(writer, watcher(api, config).default_backoff());
        futures::pin_mut!(stream);
        let apply = |reader: &reflector::Store<EndpointSlice>| {
            if reader.wait_until_ready().now_or_never().is_none() {
                return;
            }
            let mut specs: Vec<MemberSpec> = Vec::new();
            for slice in reader.state() {
                for m in members_of(&slice) {
                    // One entry per runner: ready wins over a stale copy.
                    match specs.iter_mut().find(|s| s.name == m.name) {
                        Some(s) if !s.ready => *s = m,
                        Some(_) => {}
                        None => specs.push(m),
                    }
                }
            }
            if let Err(e) = pool.set_members(&specs) {
                tracing::warn!(service = %service, error = %e, "bad runner endpoint");
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(_)) => apply(&reader),
                    Some(Err(e)) => tracing::warn!(error = %e, "watching the runner EndpointSlices"),
                    None => break,
                },
                _ = tick.tick() => apply(&reader),
            }
        }
    })
}

fn mark(m: &mut Member, ready: bool, now: Instant) {
    if ready {
        m.ready = true;
        m.unready_since = None;
    } else {
        m.ready = false;
        m.unready_since.get_or_insert(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, ready: bool) -> MemberSpec {
        MemberSpec {
            name: name.into(),
            url: format!("http://{name}.runner:9003"),
            ready,
        }
    }

    fn owners(pool: &RunnerPool, hosts: &[String]) -> Vec<String> {
        hosts
            .iter()
            .map(|h| pool.pick(h).map(|(n, _)| n).unwrap_or_default())
            .collect()
    }

    #[test]
    fn a_host_stays_with_its_runner_and_only_the_lost_runners_hosts_move() {
        let pool = RunnerPool::new("t");
        let hosts: Vec<String> = (0..200)
            .map(|i| host_key(&format!("10.0.0.{i}"), 22))
            .collect();
        pool.set_members(&[spec("r-0", true), spec("r-1", true), spec("r-2", true)])
            .unwrap();
        let before = owners(&pool, &hosts);
        assert_eq!(
            before,
            owners(&pool, &hosts),
            "the same host, the same runner"
        );
        for r in ["r-0", "r-1", "r-2"] {
            let n = before.iter().filter(|o| *o == r).count();
            assert!((40..=95).contains(&n), "{r} serves {n} of 200 hosts");
        }
        // r-1 goes away: its hosts move to the others, no other host moves.
        pool.set_members(&[spec("r-0", true), spec("r-1", false), spec("r-2", true)])
            .unwrap();
        let during = owners(&pool, &hosts);
        for (b, d) in before.iter().zip(&during) {
            if b == "r-1" {
                assert_ne!(d, "r-1");
            } else {
                assert_eq!(b, d);
            }
        }
        // Absent from the membership is not ready either; back, it gets its
        // hosts back.
        pool.set_members(&[spec("r-0", true), spec("r-2", true)])
            .unwrap();
        assert_eq!(during, owners(&pool, &hosts));
        pool.set_members(&[spec("r-0", true), spec("r-1", true), spec("r-2", true)])
            .unwrap();
        assert_eq!(before, owners(&pool, &hosts));
        assert_eq!(pool.ready(), ["r-0", "r-1", "r-2"]);
    }

    #[test]
    fn no_ready_runner_no_pick_and_gone_after_a_grace() {
        let mut pool = RunnerPool::new("t");
        Arc::get_mut(&mut pool).unwrap().gone_after = Duration::ZERO;
        pool.set_members(&[spec("r-0", false)]).unwrap();
        assert!(pool.pick("h:22").is_none());
        let (_, gone) = pool.member("r-0").unwrap();
        assert!(gone);
        pool.reached("r-0", true);
        assert_eq!(pool.pick("h:22").unwrap().0, "r-0");
        assert!(!pool.member("r-0").unwrap().1);
        assert!(pool.member("r-9").is_none());
    }

    #[test]
    fn weights_are_stable() {
        // Fixed values: the mapping must not change between versions.
        assert_eq!(weight("a", "h:22"), weight("a", "h:22"));
        assert_ne!(weight("a", "h:22"), weight("b", "h:22"));
        assert_ne!(weight("a", "h:22"), weight("a", "h:23"));
    }
}

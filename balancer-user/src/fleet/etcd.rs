//! The fleet's store in etcd (v3 API, `etcd-client`): the state key read, swapped in one
//! transaction comparing its mod revision, and watched; hosts' records put under a lease;
//! the leader elected by a transaction that creates the leader key only where it is absent,
//! under a lease of its own (`--leader-ttl`), and the leader's writes fenced by comparing
//! the key's create revision (its term) in the same transaction.

use std::{sync::Mutex, time::Duration};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use tokio::sync::mpsc;

use super::{
    keys::Keys,
    remote::{Call, Campaign, Remote, Stored, Swap},
    url::StoreUrl,
    FleetError,
};

/// How long one request may take before the store counts as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Seconds a host's record outlives its daemon's last renewal.
pub const LEASE_TTL: i64 = 5;

/// A fleet's store in etcd.
pub struct Etcd {
    client: Client,
    keys: Keys,
    /// The lease of this host's record, once granted.
    lease: Mutex<Option<i64>>,
    /// The lease this host would lead under, once granted.
    leader_lease: Mutex<Option<i64>>,
}

impl Etcd {
    /// A client of the endpoints of `url` (no connection is made yet: a store that is down
    /// now is tried at each call).
    pub async fn connect(url: &StoreUrl) -> Result<Self, FleetError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(1), REQUEST_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let client = Client::connect(url.urls(), Some(options))
            .await
            .map_err(unavailable)?;
        Ok(Self {
            client,
            keys: Keys::new(&url.prefix),
            lease: Mutex::new(None),
            leader_lease: Mutex::new(None),
        })
    }

    /// The lease of this host's record: the one granted before, or a new one.
    async fn lease(&self) -> Result<i64, FleetError> {
        if let Some(id) = *self.lease.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(id);
        }
        let granted = timed(self.client.clone().lease_grant(LEASE_TTL, None)).await?;
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(granted.id());
        Ok(granted.id())
    }

    /// Forgets the lease (it expired, or etcd lost it).
    fn drop_lease(&self) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The leader lease, kept alive now (its time to live starts again), or a new one of
    /// `ttl` seconds when there was none or it expired: its id and time to live.
    async fn leader_lease(&self, ttl: i64) -> Result<(i64, i64), FleetError> {
        let held = *self.leader_lease.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = held {
            // An expired lease is an error of etcd's ("requested lease not found"), or a
            // time to live of 0: either way a new one is granted (etcd away: that fails).
            match keep_alive(&self.client, id).await {
                Ok(left) if left > 0 => return Ok((id, left)),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("the leader lease is gone: {}", crate::error::one_line(&e))
                }
            }
        }
        let granted = timed(self.client.clone().lease_grant(ttl, None)).await?;
        *self.leader_lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(granted.id());
        Ok((granted.id(), granted.ttl()))
    }

    /// The first key-value of a transaction's failure branch that read `key`.
    fn read_back(answer: &etcd_client::TxnResponse, key: &str) -> Option<etcd_client::KeyValue> {
        answer.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(got) => got
                .kvs()
                .first()
                .filter(|kv| kv.key() == key.as_bytes())
                .cloned(),
            _ => None,
        })
    }
}

/// Keeps lease `id` alive once: its time to live now (0: it expired).
async fn keep_alive(client: &Client, id: i64) -> Result<i64, FleetError> {
    let (mut keeper, mut answers) = timed(client.clone().lease_keep_alive(id)).await?;
    keeper.keep_alive().await.map_err(unavailable)?;
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, answers.message())
        .await
        .map_err(|_| FleetError::Unavailable("no answer in time".into()))?
        .map_err(unavailable)?;
    Ok(answer.map_or(0, |a| a.ttl()))
}

impl Remote for Etcd {
    fn read(&self) -> Call<'_, Stored> {
        Box::pin(async move {
            let got = timed(self.client.clone().get(self.keys.state(), None)).await?;
            Ok(match got.kvs().first() {
                Some(kv) => Stored {
                    revision: kv.mod_revision(),
                    document: Some(kv.value().to_vec()),
                },
                None => Stored {
                    revision: 0,
                    document: None,
                },
            })
        })
    }

    fn swap(&self, expected: i64, document: Vec<u8>) -> Call<'_, Swap> {
        Box::pin(async move {
            let key = self.keys.state();
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    expected,
                )])
                .and_then([TxnOp::put(key.clone(), document, None)])
                .or_else([TxnOp::get(key, Some(GetOptions::new().with_keys_only()))]);
            let answer = timed(self.client.clone().txn(txn)).await?;
            let revision = answer.header().map_or(0, |h| h.revision());
            if answer.succeeded() {
                return Ok(Swap::Done(revision));
            }
            let current = answer
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    etcd_client::TxnOpResponse::Get(got) => {
                        Some(got.kvs().first().map_or(0, |kv| kv.mod_revision()))
                    }
                    _ => None,
                })
                .unwrap_or(revision);
            Ok(Swap::Moved(current))
        })
    }

    fn watch(&self, after: i64, to: mpsc::Sender<Stored>) -> Call<'_, ()> {
        Box::pin(async move {
            let options = WatchOptions::new().with_start_revision(after + 1);
            let mut stream =
                timed(self.client.clone().watch(self.keys.state(), Some(options))).await?;
            loop {
                let answer = next_answer(&mut stream).await?;
                for event in answer.events() {
                    let Some(kv) = event.kv() else { continue };
                    if event.event_type() == EventType::Delete {
                        tracing::warn!(
                            revision = kv.mod_revision(),
                            "the fleet's state key was deleted; the hosts keep their state"
                        );
                        continue;
                    }
                    let stored = Stored {
                        revision: kv.mod_revision(),
                        document: Some(kv.value().to_vec()),
                    };
                    if to.send(stored).await.is_err() {
                        return Ok(());
                    }
                }
            }
        })
    }

    fn announce(&self, host: &str, record: Vec<u8>) -> Call<'_, ()> {
        let key = self.keys.host(host);
        Box::pin(async move {
            let lease = self.lease().await?;
            let put = PutOptions::new().with_lease(lease);
            if let Err(e) = timed(self.client.clone().put(key, record, Some(put))).await {
                // Most often the lease expired while etcd was away: a new one next time.
                self.drop_lease();
                return Err(e);
            }
            let (mut keeper, mut answers) =
                timed(self.client.clone().lease_keep_alive(lease)).await?;
            keeper.keep_alive().await.map_err(unavailable)?;
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, answers.message())
                .await
                .map_err(|_| FleetError::Unavailable("no answer in time".into()))?
                .map_err(unavailable)?;
            if answer.is_none_or(|a| a.ttl() <= 0) {
                self.drop_lease();
            }
            Ok(())
        })
    }

    fn hosts(&self) -> Call<'_, Vec<Vec<u8>>> {
        Box::pin(async move {
            let options = GetOptions::new().with_prefix();
            let got = timed(self.client.clone().get(self.keys.hosts(), Some(options))).await?;
            Ok(got.kvs().iter().map(|kv| kv.value().to_vec()).collect())
        })
    }

    fn watch_hosts(&self, to: mpsc::Sender<()>) -> Call<'_, ()> {
        Box::pin(async move {
            let options = WatchOptions::new().with_prefix();
            let mut stream =
                timed(self.client.clone().watch(self.keys.hosts(), Some(options))).await?;
            loop {
                let answer = next_answer(&mut stream).await?;
                // A key made (its first version) or deleted: a host joined or left; the
                // records renewed every second are not.
                let moved = answer.events().iter().any(|event| {
                    event.event_type() == EventType::Delete
                        || event.kv().is_some_and(|kv| kv.version() == 1)
                });
                if moved {
                    if let Err(mpsc::error::TrySendError::Closed(())) = to.try_send(()) {
                        return Ok(());
                    }
                }
            }
        })
    }

    fn campaign(&self, host: &str, ttl: i64) -> Call<'_, Campaign> {
        let host = host.to_string();
        Box::pin(async move {
            let key = self.keys.leader();
            // A read first: a host that follows sends nothing else while the key is held.
            let held = *self.leader_lease.lock().unwrap_or_else(|e| e.into_inner());
            let got = timed(self.client.clone().get(key.clone(), None)).await?;
            if let Some(kv) = got.kvs().first() {
                let leader = String::from_utf8_lossy(kv.value()).into_owned();
                if Some(kv.lease()) != held || leader != host {
                    return Ok(Campaign::Following {
                        leader: Some(leader),
                    });
                }
                // Ours: while its lease lives, so does the key, with the same term.
                let (lease, left) = self.leader_lease(ttl).await?;
                if Some(lease) == held {
                    return Ok(Campaign::Leading {
                        term: kv.create_revision(),
                        ttl: left,
                    });
                }
            }
            let (lease, left) = self.leader_lease(ttl).await?;
            let put = PutOptions::new().with_lease(lease);
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), host.clone(), Some(put))])
                .or_else([TxnOp::get(key.clone(), None)]);
            let answer = timed(self.client.clone().txn(txn)).await?;
            if answer.succeeded() {
                let term = answer.header().map_or(0, |h| h.revision());
                return Ok(Campaign::Leading { term, ttl: left });
            }
            Ok(match Self::read_back(&answer, &key) {
                Some(kv) if kv.value() == host.as_bytes() && kv.lease() == lease => {
                    Campaign::Leading {
                        term: kv.create_revision(),
                        ttl: left,
                    }
                }
                Some(kv) => Campaign::Following {
                    leader: Some(String::from_utf8_lossy(kv.value()).into_owned()),
                },
                None => Campaign::Following { leader: None },
            })
        })
    }

    fn resign(&self, _host: &str) -> Call<'_, ()> {
        Box::pin(async move {
            let held = self
                .leader_lease
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(id) = held {
                timed(self.client.clone().lease_revoke(id)).await?;
            }
            Ok(())
        })
    }

    fn leader(&self) -> Call<'_, Option<String>> {
        Box::pin(async move {
            let got = timed(self.client.clone().get(self.keys.leader(), None)).await?;
            Ok(got
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
        })
    }

    fn swap_fenced(&self, expected: i64, term: i64, document: Vec<u8>) -> Call<'_, Swap> {
        Box::pin(async move {
            let (state, leader) = (self.keys.state(), self.keys.leader());
            let keys_only = || Some(GetOptions::new().with_keys_only());
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(state.clone(), CompareOp::Equal, expected),
                    Compare::create_revision(leader.clone(), CompareOp::Equal, term),
                ])
                .and_then([TxnOp::put(state.clone(), document, None)])
                .or_else([
                    TxnOp::get(state.clone(), keys_only()),
                    TxnOp::get(leader.clone(), keys_only()),
                ]);
            let answer = timed(self.client.clone().txn(txn)).await?;
            if answer.succeeded() {
                return Ok(Swap::Done(answer.header().map_or(0, |h| h.revision())));
            }
            let held = Self::read_back(&answer, &leader).map(|kv| kv.create_revision());
            if held != Some(term) {
                return Ok(Swap::Fenced);
            }
            let current = Self::read_back(&answer, &state).map_or(0, |kv| kv.mod_revision());
            Ok(Swap::Moved(current))
        })
    }

    fn report(&self, host: &str, checks: Vec<u8>) -> Call<'_, ()> {
        let key = self.keys.check(host);
        Box::pin(async move {
            let lease = self.lease().await?;
            let put = PutOptions::new().with_lease(lease);
            if let Err(e) = timed(self.client.clone().put(key, checks, Some(put))).await {
                self.drop_lease();
                return Err(e);
            }
            Ok(())
        })
    }

    fn reports(&self) -> Call<'_, Vec<Vec<u8>>> {
        Box::pin(async move {
            let options = GetOptions::new().with_prefix();
            let got = timed(self.client.clone().get(self.keys.checks(), Some(options))).await?;
            Ok(got.kvs().iter().map(|kv| kv.value().to_vec()).collect())
        })
    }

    fn health(&self) -> Call<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            let got = timed(self.client.clone().get(self.keys.health(), None)).await?;
            Ok(got.kvs().first().map(|kv| kv.value().to_vec()))
        })
    }

    fn rule(&self, term: i64, view: Vec<u8>) -> Call<'_, bool> {
        Box::pin(async move {
            let leader = self.keys.leader();
            let txn = Txn::new()
                .when([Compare::create_revision(leader, CompareOp::Equal, term)])
                .and_then([TxnOp::put(self.keys.health(), view, None)]);
            Ok(timed(self.client.clone().txn(txn)).await?.succeeded())
        })
    }
}

/// The next answer of a watch: unavailable when the watch ended or etcd canceled it.
async fn next_answer(
    stream: &mut etcd_client::WatchStream,
) -> Result<etcd_client::WatchResponse, FleetError> {
    let Some(answer) = stream.message().await.map_err(unavailable)? else {
        return Err(FleetError::Unavailable("the watch ended".into()));
    };
    if answer.canceled() {
        let why = answer.cancel_reason().to_string();
        return Err(FleetError::Unavailable(format!("watch canceled: {why}")));
    }
    Ok(answer)
}

/// `call`, or unavailable when it fails or takes longer than [`REQUEST_TIMEOUT`].
async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, FleetError> {
    tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .map_err(|_| FleetError::Unavailable("no answer in time".into()))?
        .map_err(unavailable)
}

/// An etcd client's error as one line.
fn unavailable(e: etcd_client::Error) -> FleetError {
    let why = match e {
        etcd_client::Error::GRpcStatus(status) => {
            format!("{}: {}", status.code().description(), status.message())
        }
        other => crate::error::one_line(&other),
    };
    FleetError::Unavailable(why.replace('\n', " "))
}

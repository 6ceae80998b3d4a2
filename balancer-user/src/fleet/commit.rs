//! Writing and reading the fleet's state: the document is the state file's JSON; a change
//! is stored with compare-and-swap on the revision it was prepared on, so of two changes
//! prepared on the same revision exactly one is stored and the other is refused, changing
//! nothing.

use super::{
    remote::{Remote, Stored, Swap},
    FleetError,
};
use crate::state::{State, STATE_FORMAT};

/// The document of `state`.
pub fn encode(state: &State) -> Vec<u8> {
    serde_json::to_vec(state).expect("state serialises")
}

/// The state a stored document holds (none stored: the empty state), checked as the state
/// file is: its format and every invariant.
pub fn decode(stored: &Stored) -> Result<State, FleetError> {
    let Some(document) = &stored.document else {
        return Ok(State::default());
    };
    let unusable = |why: String| FleetError::Unusable {
        revision: stored.revision,
        why,
    };
    let state: State =
        serde_json::from_slice(document).map_err(|e| unusable(format!("not a state: {e}")))?;
    if state.format != STATE_FORMAT {
        return Err(unusable(format!(
            "format {}, which this version does not support",
            state.format
        )));
    }
    state
        .validate()
        .map_err(|e| unusable(crate::error::one_line(&e)))?;
    Ok(state)
}

/// Stores `state` if the store is still at revision `base`: the new revision. Otherwise
/// refused with [`FleetError::Moved`] (the stored state is left as it is).
pub async fn commit(remote: &dyn Remote, base: i64, state: &State) -> Result<i64, FleetError> {
    answer(remote.swap(base, encode(state)).await?, None)
}

/// Like [`commit`], for the leader's own changes: stored only while the leader key is
/// still the one of `term` (checked in the same transaction); otherwise refused with
/// [`FleetError::Deposed`], nothing stored.
pub async fn commit_fenced(
    remote: &dyn Remote,
    base: i64,
    term: i64,
    state: &State,
) -> Result<i64, FleetError> {
    answer(
        remote.swap_fenced(base, term, encode(state)).await?,
        Some(term),
    )
}

/// What a swap's answer means for a commit in `term` (none: unfenced).
fn answer(swap: Swap, term: Option<i64>) -> Result<i64, FleetError> {
    match swap {
        Swap::Done(revision) => Ok(revision),
        Swap::Moved(revision) => Err(FleetError::Moved { revision }),
        Swap::Fenced => Err(FleetError::Deposed {
            term: term.unwrap_or(0),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        error::one_line,
        fleet::remote::fake::FakeRemote,
        state::tests::{ip, sample},
    };

    fn weight(state: &State) -> u16 {
        let web = state.service("web").unwrap();
        let (_, b) = web
            .backends()
            .find(|(_, b)| b.addr == ip("198.18.0.101"))
            .unwrap();
        b.weight
    }

    async fn stored(remote: &FakeRemote) -> (i64, State) {
        let stored = remote.read().await.unwrap();
        (stored.revision, decode(&stored).unwrap())
    }

    #[tokio::test]
    async fn of_two_changes_on_one_revision_the_second_is_refused_and_changes_nothing() {
        let remote = FakeRemote::default();
        let (base, empty) = stored(&remote).await;
        assert_eq!((base, empty), (0, State::default()));
        let first = commit(&remote, 0, &sample()).await.unwrap();
        assert!(first > 0);
        let mut other = sample();
        other.remove_service("dns").unwrap();
        let err = commit(&remote, 0, &other).await.unwrap_err();
        assert_eq!(
            one_line(&err),
            format!("the state changed meanwhile (revision {first}): try again")
        );
        assert_eq!(stored(&remote).await, (first, sample()));
        let second = commit(&remote, first, &other).await.unwrap();
        assert!(second > first);
        assert_eq!(stored(&remote).await, (second, other));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_read_modify_writes_never_lose_an_update() {
        let remote = Arc::new(FakeRemote::default());
        let mut start = sample();
        start.set_weight("web", ip("198.18.0.101"), 0).unwrap();
        commit(&*remote, 0, &start).await.unwrap();
        // Four writers add one to the weight 50 times each, reading before each try and
        // trying again when refused: every stored increment must show.
        let writers = (0..4).map(|_| {
            let remote = remote.clone();
            tokio::spawn(async move {
                let (mut stored_ok, mut refused) = (0, 0);
                while stored_ok < 50 {
                    let (base, mut state) = stored(&remote).await;
                    let next = weight(&state) + 1;
                    state.set_weight("web", ip("198.18.0.101"), next).unwrap();
                    match commit(&*remote, base, &state).await {
                        Ok(_) => stored_ok += 1,
                        Err(FleetError::Moved { revision }) => {
                            assert!(revision > base);
                            refused += 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                    tokio::task::yield_now().await;
                }
                refused
            })
        });
        let mut refused = 0;
        for writer in writers {
            refused += writer.await.unwrap();
        }
        let (_, end) = stored(&remote).await;
        assert_eq!(weight(&end), 200, "{refused} refused tries");
    }

    #[tokio::test]
    async fn an_unreachable_store_refuses_in_one_line_and_keeps_what_it_had() {
        let remote = FakeRemote::default();
        let first = commit(&remote, 0, &sample()).await.unwrap();
        remote.set_down(true);
        let err = commit(&remote, first, &State::default()).await.unwrap_err();
        assert_eq!(one_line(&err), "store unavailable: connection refused");
        remote.set_down(false);
        assert_eq!(stored(&remote).await, (first, sample()));
    }

    #[test]
    fn a_stored_document_that_does_not_load_is_refused_in_one_line() {
        let good = String::from_utf8(encode(&sample())).unwrap();
        let cases = [
            ("{".to_string(), "not a state"),
            (good.replace("\"format\":1", "\"format\":9"), "format 9"),
            (good.replace("\"slot\":1", "\"slot\":0"), "slot"),
        ];
        for (text, why) in cases {
            let stored = Stored {
                revision: 7,
                document: Some(text.into_bytes()),
            };
            let err = one_line(&decode(&stored).unwrap_err());
            assert!(
                err.starts_with("the stored state at revision 7 is unusable: "),
                "{err}"
            );
            assert!(err.contains(why), "{why}: {err}");
            assert_eq!(err.lines().count(), 1);
        }
        let round = Stored {
            revision: 3,
            document: Some(good.into_bytes()),
        };
        assert_eq!(decode(&round).unwrap(), sample());
    }
}

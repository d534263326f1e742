//! Presence (y-protocols awareness) of one list: who is here and their
//! state (name, cursor). Local clients speak through this replica's
//! connections; remote ones were relayed by other replicas and expire when
//! nobody renews them. Changes are coalesced and flushed together.
//!
//! The rules are y-protocols': an entry replaces another with a higher
//! clock, and `null` at the same clock removes it. A client belongs to the
//! connection that last announced it with a newer clock; y-websocket
//! clients echo everyone's presence back at the clock they received, and an
//! echo neither moves a client to the echoing connection nor counts
//! against its caps. Departed clients are
//! forgotten (a later announcement with any clock is welcome again), so
//! memory holds only who is present. What one connection and one list can
//! make the server hold is capped. Without I/O: the room sends and relays
//! what this returns.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use yrs::ClientID;
use yrs::sync::AwarenessUpdate;
use yrs::sync::awareness::AwarenessUpdateEntry;

use super::ConnId;

/// Presence relayed from another replica that was not renewed for this long
/// is dropped (y-protocols' outdated timeout; clients renew every 15 s).
const REMOTE_TIMEOUT: Duration = Duration::from_secs(30);
const NULL: &str = "null";

/// What presence may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PresenceLimits {
    /// Client ids one connection may announce.
    pub(crate) clients_per_conn: usize,
    /// Bytes of one client's state (its JSON).
    pub(crate) state_bytes: usize,
    /// Bytes of every client's state on the list together.
    pub(crate) list_bytes: usize,
}

/// Why a connection's presence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PresenceError {
    #[error("presence of more than {0} clients on one connection")]
    TooManyClients(usize),
    #[error("presence state larger than {0} bytes")]
    StateTooLarge(usize),
    #[error("the list's presence is full")]
    ListFull,
}

struct State {
    clock: u32,
    json: Arc<str>,
    /// The connection it speaks through; `None`: relayed from another replica.
    conn: Option<ConnId>,
    /// When another replica last renewed it (relayed entries only).
    renewed: Instant,
}

/// Removals and changes to send: to this replica's clients, and (for its
/// own clients) to the other replicas.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    pub(crate) broadcast: Option<AwarenessUpdate>,
    pub(crate) relay: Option<AwarenessUpdate>,
}

pub(crate) struct Presence {
    limits: PresenceLimits,
    coalesce: Duration,
    states: HashMap<ClientID, State>,
    /// Clients each connection announced.
    by_conn: HashMap<ConnId, HashSet<ClientID>>,
    /// Bytes of all states.
    bytes: usize,
    /// Changes not sent to this replica's clients yet (removed ones carry
    /// their last clock).
    dirty: HashMap<ClientID, AwarenessUpdateEntry>,
    /// Changes of this replica's clients not relayed yet.
    outgoing: HashMap<ClientID, AwarenessUpdateEntry>,
    flush_at: Option<Instant>,
}

/// What applying one entry did.
enum Change {
    None,
    Set,
    Removed,
}

impl Presence {
    pub(crate) fn new(limits: PresenceLimits, coalesce: Duration) -> Self {
        Presence {
            limits,
            coalesce,
            states: HashMap::new(),
            by_conn: HashMap::new(),
            bytes: 0,
            dirty: HashMap::new(),
            outgoing: HashMap::new(),
            flush_at: None,
        }
    }

    /// Everyone present, for a client that joins or asks.
    pub(crate) fn full(&self) -> AwarenessUpdate {
        AwarenessUpdate {
            clients: self
                .states
                .iter()
                .map(|(client, s)| (*client, entry(s.clock, s.json.clone())))
                .collect(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Bytes of state held for the list.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the coalesced changes are due.
    pub(crate) fn flush_at(&self) -> Option<Instant> {
        self.flush_at
    }

    /// Presence a connection sent. Checked whole against the caps before
    /// anything of it is applied.
    pub(crate) fn apply_local(
        &mut self,
        conn: ConnId,
        update: AwarenessUpdate,
    ) -> Result<(), PresenceError> {
        let mine = self.by_conn.get(&conn);
        let mut announced = mine.map_or(0, HashSet::len);
        let mut growth = 0usize;
        for (client, e) in &update.clients {
            if e.json.as_ref() == NULL {
                continue;
            }
            // y-websocket clients send back every presence change they
            // receive, others' included, at the clock they got: such an
            // echo changes nothing and counts for nothing.
            if self.states.get(client).is_some_and(|s| s.clock >= e.clock) {
                continue;
            }
            if e.json.len() > self.limits.state_bytes {
                return Err(PresenceError::StateTooLarge(self.limits.state_bytes));
            }
            if !mine.is_some_and(|m| m.contains(client)) {
                announced += 1;
            }
            let old = self.states.get(client).map_or(0, |s| s.json.len());
            growth += e.json.len().saturating_sub(old);
        }
        if announced > self.limits.clients_per_conn {
            return Err(PresenceError::TooManyClients(self.limits.clients_per_conn));
        }
        if growth > 0 && self.bytes + growth > self.limits.list_bytes {
            return Err(PresenceError::ListFull);
        }
        for (client, e) in update.clients {
            match self.apply_entry(client, e.clock, e.json, Some(conn)) {
                // Nothing newer (an echo, or a reconnecting client's last
                // state): whoever speaks for the client still does, so the
                // client leaves with its own socket, not with the echoer's.
                Change::None => {}
                Change::Set | Change::Removed => {
                    let e = self.entry_of(client);
                    self.outgoing.insert(client, e.clone());
                    self.mark_dirty(client, e);
                }
            }
        }
        Ok(())
    }

    /// Presence another replica relayed (already checked when it arrived
    /// there; it is bounded by the relay's envelope size).
    pub(crate) fn apply_relayed(&mut self, update: AwarenessUpdate) {
        for (client, e) in update.clients {
            match self.apply_entry(client, e.clock, e.json, None) {
                Change::None => {
                    if let Some(state) = self.states.get_mut(&client)
                        && state.conn.is_none()
                    {
                        state.renewed = Instant::now();
                    }
                }
                Change::Set | Change::Removed => {
                    let e = self.entry_of(client);
                    self.mark_dirty(client, e);
                }
            }
        }
    }

    /// Applies one entry by y-protocols' rules; `conn` is who speaks for it.
    fn apply_entry(
        &mut self,
        client: ClientID,
        clock: u32,
        json: Arc<str>,
        conn: Option<ConnId>,
    ) -> Change {
        let is_null = json.as_ref() == NULL;
        let Some(state) = self.states.get_mut(&client) else {
            if is_null {
                // Removing someone not here: nothing to hold.
                return Change::None;
            }
            self.bytes += json.len();
            self.states.insert(
                client,
                State {
                    clock,
                    json,
                    conn,
                    renewed: Instant::now(),
                },
            );
            self.claim(client, conn);
            return Change::Set;
        };
        let removes_at_same_clock = state.clock == clock && is_null;
        if state.clock >= clock && !removes_at_same_clock {
            return Change::None;
        }
        if is_null {
            self.remove_state(client, clock);
            return Change::Removed;
        }
        self.bytes = self.bytes - state.json.len() + json.len();
        state.clock = clock;
        state.json = json;
        state.renewed = Instant::now();
        self.claim(client, conn);
        Change::Set
    }

    /// `client` speaks through `conn` now (or another replica: `None`).
    fn claim(&mut self, client: ClientID, conn: Option<ConnId>) {
        let Some(state) = self.states.get_mut(&client) else {
            return;
        };
        if let Some(old) = state.conn
            && Some(old) != conn
            && let Some(set) = self.by_conn.get_mut(&old)
        {
            set.remove(&client);
        }
        state.conn = conn;
        if let Some(conn) = conn {
            self.by_conn.entry(conn).or_default().insert(client);
        }
    }

    /// Forgets a client; the removal (with `clock`) goes out with the next flush.
    fn remove_state(&mut self, client: ClientID, clock: u32) {
        if let Some(state) = self.states.remove(&client) {
            self.bytes -= state.json.len();
            if let Some(conn) = state.conn
                && let Some(set) = self.by_conn.get_mut(&conn)
            {
                set.remove(&client);
            }
        }
        self.dirty.insert(client, entry(clock, NULL.into()));
    }

    /// The current entry of `client`: its state, or `null` at its last
    /// clock once removed.
    fn entry_of(&self, client: ClientID) -> AwarenessUpdateEntry {
        match self.states.get(&client) {
            Some(s) => entry(s.clock, s.json.clone()),
            None => self
                .dirty
                .get(&client)
                .cloned()
                .unwrap_or_else(|| entry(0, NULL.into())),
        }
    }

    fn mark_dirty(&mut self, client: ClientID, e: AwarenessUpdateEntry) {
        self.dirty.insert(client, e);
        if self.flush_at.is_none() {
            self.flush_at = Some(Instant::now() + self.coalesce);
        }
    }

    /// The coalesced changes: for this replica's clients and for the relay.
    pub(crate) fn flush(&mut self) -> Outgoing {
        self.flush_at = None;
        Outgoing {
            broadcast: non_empty(std::mem::take(&mut self.dirty)),
            relay: non_empty(std::mem::take(&mut self.outgoing)),
        }
    }

    /// A connection left: its clients are removed at once, for everyone
    /// here and on the other replicas.
    pub(crate) fn conn_left(&mut self, conn: ConnId) -> Outgoing {
        let clients = self.by_conn.remove(&conn).unwrap_or_default();
        self.remove_now(clients.into_iter().collect())
    }

    /// Every client of this replica leaves (shutdown).
    pub(crate) fn all_local_left(&mut self) -> Outgoing {
        let clients: Vec<ClientID> = self.by_conn.drain().flat_map(|(_, c)| c).collect();
        self.remove_now(clients)
    }

    /// Drops relayed presence nobody renewed (its replica may be gone);
    /// the removal goes to this replica's clients only.
    pub(crate) fn expire_remote(&mut self) -> Option<AwarenessUpdate> {
        let now = Instant::now();
        let expired: Vec<ClientID> = self
            .states
            .iter()
            .filter(|(_, s)| s.conn.is_none() && now.duration_since(s.renewed) >= REMOTE_TIMEOUT)
            .map(|(client, _)| *client)
            .collect();
        self.remove_now(expired).broadcast
    }

    /// Removes `clients` at once (clock unchanged, as y-protocols removes
    /// a remote client), outside the coalescing.
    fn remove_now(&mut self, clients: Vec<ClientID>) -> Outgoing {
        let mut removal = HashMap::new();
        let mut relay = HashMap::new();
        for client in clients {
            let Some(state) = self.states.get(&client) else {
                continue;
            };
            let (clock, is_local) = (state.clock, state.conn.is_some());
            self.remove_state(client, clock);
            self.dirty.remove(&client);
            self.outgoing.remove(&client);
            removal.insert(client, entry(clock, NULL.into()));
            if is_local {
                relay.insert(client, entry(clock, NULL.into()));
            }
        }
        Outgoing {
            broadcast: non_empty(removal),
            relay: non_empty(relay),
        }
    }
}

fn entry(clock: u32, json: Arc<str>) -> AwarenessUpdateEntry {
    AwarenessUpdateEntry { clock, json }
}

fn non_empty(clients: HashMap<ClientID, AwarenessUpdateEntry>) -> Option<AwarenessUpdate> {
    (!clients.is_empty()).then_some(AwarenessUpdate { clients })
}

#[cfg(test)]
mod tests;

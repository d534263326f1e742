//! The sync loop: one multiplexed socket (`GET /v1/sync`) carrying every
//! list the client keeps, reopened with exponential backoff and full
//! jitter on any replica that answers.
//!
//! Each list is subscribed with durable acknowledgements. The server
//! answers with its sync step 1; the client answers that with everything
//! the server lacks (so every pending local edit is uploaded on every
//! reconnect, even when nothing is missing: that empty answer brings an
//! acknowledgement) and asks for what it lacks with its own step 1.
//! Acknowledgements are recorded on the device; a list is synced when the
//! server's state is here and none of its local edits is left unstored.
//!
//! What the server closes for good (4403, 4404, 4400, 4414 on a list) is
//! never retried in a loop: the list stops and says why. A socket-wide
//! 4440/4401 refreshes the access token and reconnects at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use larder_crdt::mux::MuxFrame;
use larder_crdt::protocol;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;
use yrs::sync::{Message, SyncMessage};

use crate::client::Shared;
use crate::config::Backoff;
use crate::family::ListFate;
use crate::session::AuthError;
use crate::status::{Stopped, SyncState};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Lists one socket carries at most (the server's default limit).
pub const MAX_LISTS_PER_SOCKET: usize = 256;
/// A WebSocket ping this often, so the server sees the client alive.
const PING_EVERY: Duration = Duration::from_secs(10);
/// How long opening a socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A socket open this long was a success: the backoff starts over. One
/// the server accepts and closes at once keeps backing off.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Largest data frame the SDK sends; the server's default limit on a
/// message is 1 MiB. A sync step 2 larger than this goes as the separate
/// unsent edits instead.
const MAX_FRAME_BYTES: usize = 512 * 1024;

/// What the client asks of the sync loop.
#[derive(Debug)]
pub(crate) enum Command {
    /// Keep this list subscribed.
    Sync(Uuid),
    /// Stop syncing this list.
    Forget(Uuid),
    /// A local edit to send (it is on disk already).
    Local { list: Uuid, update: Vec<u8> },
    /// Fetch the lists of the synced families again now.
    Families,
    /// Someone signed in or out: reopen the socket with the new session.
    SessionChanged,
}

/// How a socket ended.
enum Ended {
    /// The client went offline.
    Offline,
    /// The server closed it.
    Closed(u16, String),
    /// The connection failed or went quiet.
    Lost(String),
    /// The client is gone.
    Shutdown,
    /// The session changed: reopen at once.
    SessionChanged,
}

/// A list whose server closed it: when to ask again.
struct Retry {
    at: Instant,
    backoff: Backoff,
}

/// The loop's state that outlives sockets.
struct Loop {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    online: watch::Receiver<bool>,
    /// Lists to keep subscribed (not stopped).
    wanted: HashSet<Uuid>,
    backoff: Backoff,
    retries: HashMap<Uuid, Retry>,
    /// Sockets in a row the server refused the token of.
    auth_refusals: u32,
    /// Unsubscribes sent on this socket and not yet confirmed (`closed`
    /// 1000), per list: a late confirmation is not taken for the end of a
    /// newer subscription.
    unsubscribing: HashMap<Uuid, u32>,
}

/// Runs until the client is dropped.
pub(crate) async fn run(
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    online: watch::Receiver<bool>,
) {
    let backoff = Backoff::new(shared.config.backoff_initial, shared.config.backoff_max);
    let mut this = Loop {
        shared,
        commands,
        online,
        wanted: HashSet::new(),
        backoff,
        retries: HashMap::new(),
        auth_refusals: 0,
        unsubscribing: HashMap::new(),
    };
    this.run().await;
}

impl Loop {
    async fn run(&mut self) {
        loop {
            let online = *self.online.borrow();
            if !online || (self.wanted.is_empty() && !self.has_families().await) {
                self.mark_all(SyncState::Offline);
                if !self.idle(None).await {
                    return;
                }
                continue;
            }
            self.mark_all(SyncState::Connecting);
            let session = match self.shared.auth.access_token(&self.shared.rest).await {
                Ok(session) => session,
                Err(AuthError::SignedOut(why)) => {
                    self.report(false, Some(format!("signed out: {why}")));
                    self.mark_all(SyncState::Offline);
                    // Waits for a sign-in (or any command), never polls.
                    if !self.idle(None).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    self.report(true, Some(e.to_string()));
                    if !self.wait_backoff().await {
                        return;
                    }
                    continue;
                }
            };
            self.report(true, None);
            self.refresh_families(&session.access_token).await;
            let Some(server) = self
                .shared
                .rest
                .servers_from_current()
                .next()
                .map(str::to_owned)
            else {
                self.report(true, Some("no server configured".into()));
                if !self.idle(None).await {
                    return;
                }
                continue;
            };
            let url = socket_url(&server, &session.access_token);
            let socket = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_tungstenite::connect_async_with_config(&url, None, true),
            )
            .await;
            let socket = match socket {
                Ok(Ok((socket, _))) => socket,
                Ok(Err(e)) => {
                    self.connect_failed(&server, e.to_string()).await;
                    if !self.wait_backoff().await {
                        return;
                    }
                    continue;
                }
                Err(_) => {
                    self.connect_failed(&server, "timed out".into()).await;
                    if !self.wait_backoff().await {
                        return;
                    }
                    continue;
                }
            };
            let opened = Instant::now();
            self.shared.status.send_modify(|s| {
                s.connects += 1;
                s.state = SyncState::Syncing;
            });
            tracing::debug!(server, "sync socket open");
            let ended = self.serve(socket).await;
            if opened.elapsed() >= HEALTHY_AFTER {
                self.backoff.reset();
            }
            for cell in self.shared.cells() {
                cell.has_server_state.store(false, Ordering::Relaxed);
            }
            self.shared
                .status
                .send_modify(|s| s.state = SyncState::Connecting);
            match ended {
                Ended::Shutdown => return,
                Ended::Offline | Ended::SessionChanged => {}
                Ended::Closed(code @ (4440 | 4401), reason) => {
                    tracing::debug!(code, reason, "sync socket closed: refreshing the token");
                    self.auth_refusals += 1;
                    if self.auth_refusals > 1 && !self.wait_backoff().await {
                        // Refused again right after a refresh: not at once.
                        return;
                    }
                    match self
                        .shared
                        .auth
                        .refresh(&self.shared.rest, &session.access_token)
                        .await
                    {
                        // A fresh token: reconnect at once, unless the
                        // server refused a token just refreshed.
                        Ok(fresh) if fresh.access_token != session.access_token => {}
                        Ok(_) | Err(AuthError::Unreachable(_)) | Err(AuthError::Storage(_)) => {
                            self.report(true, Some(format!("{code}: {reason}")));
                            if !self.wait_backoff().await {
                                return;
                            }
                        }
                        Err(AuthError::SignedOut(why)) => {
                            self.report(false, Some(format!("signed out: {why}")));
                        }
                    }
                }
                Ended::Closed(code, reason) => {
                    self.report(
                        true,
                        Some(format!("server closed the socket: {code} {reason}")),
                    );
                    if code == 1001 {
                        // Shutting down: another replica takes over.
                        self.shared.rest.skip_current();
                    }
                    if !self.wait_backoff().await {
                        return;
                    }
                }
                Ended::Lost(why) => {
                    self.report(true, Some(format!("connection lost: {why}")));
                    self.shared.rest.skip_current();
                    if !self.wait_backoff().await {
                        return;
                    }
                }
            }
        }
    }

    async fn connect_failed(&mut self, server: &str, why: String) {
        tracing::debug!(server, why, "cannot open the sync socket");
        self.report(true, Some(format!("cannot reach {server}: {why}")));
        self.shared.rest.skip_current();
        self.mark_all(SyncState::Offline);
    }

    /// Waits the next backoff delay, taking commands meanwhile. False when
    /// the client is gone.
    async fn wait_backoff(&mut self) -> bool {
        let delay = self.backoff.next();
        self.mark_all(SyncState::Offline);
        self.idle(Some(Instant::now() + delay)).await
    }

    /// Takes commands until `until` (or, without it, until something could
    /// change the outcome: going online, a sign-in, a list to sync).
    async fn idle(&mut self, until: Option<Instant>) -> bool {
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => return false,
                    Some(Command::Sync(list)) => {
                        let new = self.wanted.insert(list);
                        self.shared.cell(list).set_state(SyncState::Offline);
                        if new && until.is_none() { return true; }
                    }
                    Some(Command::Forget(list)) => { self.wanted.remove(&list); }
                    Some(Command::Local { .. }) => {}
                    Some(Command::Families | Command::SessionChanged) => if until.is_none() { return true },
                },
                changed = self.online.changed() => {
                    if changed.is_err() { return false; }
                    if until.is_none() || !*self.online.borrow() { return true; }
                }
                _ = sleep_until(until.unwrap_or_else(far_future)), if until.is_some() => return true,
            }
        }
    }

    async fn has_families(&self) -> bool {
        self.shared
            .store
            .families()
            .await
            .is_ok_and(|f| !f.is_empty())
    }

    /// Fetches the lists of every synced family: new ones are kept and
    /// synced, ones gone from the server are evicted (their unsent edits
    /// stay exportable). Returns the lists evicted.
    async fn refresh_families(&mut self, token: &str) -> Vec<Uuid> {
        let families = self.shared.store.families().await.unwrap_or_default();
        let mut evicted = Vec::new();
        for family in families {
            // Read before asking: a list kept meanwhile (just created) is
            // not mistaken for one deleted.
            let kept = self
                .shared
                .store
                .family_lists(family)
                .await
                .unwrap_or_default();
            match crate::family::fetch_lists(&self.shared, family, token).await {
                Ok(present) => {
                    for list in &present {
                        let stopped =
                            self.shared.cell(*list).status.borrow().state == SyncState::Stopped;
                        // Lists refused for good, deleted or forgotten on
                        // this device are not taken back.
                        if !stopped
                            && self
                                .shared
                                .store
                                .keep_family_list(*list, family)
                                .await
                                .unwrap_or(false)
                        {
                            self.wanted.insert(*list);
                        }
                    }
                    for list in kept.into_iter().filter(|l| !present.contains(l)) {
                        if self.evict(list, 4404, "the list was deleted").await {
                            evicted.push(list);
                        }
                    }
                }
                Err(e) if matches!(e.status(), Some(403 | 404)) => {
                    tracing::info!(%family, error = %e, "no longer a member of the family");
                    let _ = self.shared.store.forget_family(family).await;
                    let lists = self
                        .shared
                        .store
                        .family_lists(family)
                        .await
                        .unwrap_or_default();
                    for list in lists {
                        self.stop(list, 4403, "no longer a member of the family");
                    }
                }
                Err(e) => self.report(true, Some(e.to_string())),
            }
        }
        evicted
    }

    /// Stops syncing a list deleted on the server and takes it off the
    /// device's list of lists; its unsent edits stay exportable.
    async fn evict(&mut self, list: Uuid, code: u16, reason: &str) -> bool {
        if self.shared.store.remove_list(list).await.is_err() {
            return false;
        }
        self.stop(list, code, reason);
        true
    }

    /// A permanent refusal: the list stops and says why.
    fn stop(&mut self, list: Uuid, code: u16, reason: &str) {
        tracing::info!(%list, code, reason, "list stopped syncing");
        self.wanted.remove(&list);
        self.retries.remove(&list);
        let cell = self.shared.cell(list);
        cell.has_server_state.store(false, Ordering::Relaxed);
        cell.status.send_modify(|s| {
            s.state = SyncState::Stopped;
            s.stopped = Some(Stopped {
                code,
                reason: reason.to_owned(),
            });
            s.last_error = Some(format!("{code}: {reason}"));
        });
        self.shared.refresh_overall();
    }

    fn mark_all(&self, state: SyncState) {
        for list in &self.wanted {
            self.shared.cell(*list).set_state(state);
        }
        self.shared.status.send_modify(|s| s.state = state);
        self.shared.refresh_overall();
    }

    fn report(&self, signed_in: bool, error: Option<String>) {
        self.shared.status.send_modify(|s| {
            s.signed_in = signed_in;
            if error.is_some() {
                s.last_error = error;
            }
        });
    }

    /// Serves one open socket until it ends.
    async fn serve(&mut self, mut socket: Socket) -> Ended {
        let mut subs: HashMap<Uuid, bool> = HashMap::new();
        self.unsubscribing.clear();
        let lists: Vec<Uuid> = self.wanted.iter().copied().collect();
        for list in lists {
            if let Err(e) = self.subscribe(&mut socket, &mut subs, list).await {
                return e;
            }
        }
        let mut last_frame = Instant::now();
        let mut next_ping = Instant::now() + PING_EVERY;
        let mut next_families = Instant::now() + self.shared.config.family_refresh;
        let mut refresh_at = self.refresh_due().await;
        loop {
            let next_retry = self.retries.values().map(|r| r.at).min();
            let dead_at = last_frame + self.shared.config.dead_after;
            tokio::select! {
                incoming = socket.next() => {
                    last_frame = Instant::now();
                    match incoming {
                        Some(Ok(WsMessage::Binary(bytes))) => {
                            if let Err(ended) = self.on_frame(&mut socket, &mut subs, &bytes).await {
                                return ended;
                            }
                        }
                        Some(Ok(WsMessage::Close(frame))) => {
                            let (code, reason) = frame
                                .map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            return Ended::Closed(code, reason);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Ended::Lost(e.to_string()),
                        None => return Ended::Lost("the server closed the connection".into()),
                    }
                }
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        let _ = socket.close(None).await;
                        return Ended::Shutdown;
                    };
                    if let Err(ended) = self.on_command(&mut socket, &mut subs, command).await {
                        return ended;
                    }
                }
                changed = self.online.changed() => {
                    if changed.is_err() || !*self.online.borrow() {
                        let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                        return if changed.is_err() { Ended::Shutdown } else { Ended::Offline };
                    }
                }
                _ = sleep_until(next_retry.unwrap_or_else(far_future)), if next_retry.is_some() => {
                    let now = Instant::now();
                    let due: Vec<Uuid> = self.retries.iter().filter(|(_, r)| r.at <= now).map(|(l, _)| *l).collect();
                    for list in due {
                        if let Some(retry) = self.retries.get_mut(&list) {
                            retry.at = far_future();
                        }
                        if self.wanted.contains(&list)
                            && !subs.contains_key(&list)
                            && let Err(e) = self.subscribe(&mut socket, &mut subs, list).await
                        {
                            return e;
                        }
                    }
                }
                _ = sleep_until(next_ping) => {
                    next_ping = Instant::now() + PING_EVERY;
                    if let Err(e) = send(&mut socket, WsMessage::Ping(Default::default())).await {
                        return e;
                    }
                }
                _ = sleep_until(next_families) => {
                    next_families = Instant::now() + self.shared.config.family_refresh;
                    if let Err(e) = self.sync_families(&mut socket, &mut subs).await {
                        return e;
                    }
                }
                _ = sleep_until(refresh_at.unwrap_or_else(far_future)), if refresh_at.is_some() => {
                    // Shortly before the token expires: a fresh one for the
                    // next socket (this one closes with 4440 at expiry).
                    if let Err(e) = self.shared.auth.access_token(&self.shared.rest).await {
                        self.report(!matches!(e, AuthError::SignedOut(_)), Some(e.to_string()));
                    }
                    refresh_at = self.refresh_due().await.filter(|at| *at > Instant::now());
                }
                _ = sleep_until(dead_at) => return Ended::Lost("no frame from the server".into()),
            }
        }
    }

    /// When the access token is due for a refresh.
    async fn refresh_due(&self) -> Option<Instant> {
        let session = self.shared.auth.current().await?;
        let left = (session.access_token_expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        Some(Instant::now() + left.saturating_sub(self.shared.config.refresh_margin))
    }

    /// Re-reads the families' lists and (un)subscribes what changed.
    async fn sync_families(
        &mut self,
        socket: &mut Socket,
        subs: &mut HashMap<Uuid, bool>,
    ) -> Result<(), Ended> {
        let Some(session) = self.shared.auth.current().await else {
            return Ok(());
        };
        let evicted = self.refresh_families(&session.access_token).await;
        for list in evicted {
            if subs.remove(&list).is_some() {
                self.unsubscribe(socket, list).await?;
            }
        }
        let missing: Vec<Uuid> = self
            .wanted
            .iter()
            .filter(|l| !subs.contains_key(l))
            .copied()
            .collect();
        for list in missing {
            self.subscribe(socket, subs, list).await?;
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, socket: &mut Socket, list: Uuid) -> Result<(), Ended> {
        *self.unsubscribing.entry(list).or_default() += 1;
        send_frame(socket, MuxFrame::Unsubscribe { list }).await
    }

    /// Subscribes lists that waited for a free place on the socket.
    async fn fill_free_places(
        &mut self,
        socket: &mut Socket,
        subs: &mut HashMap<Uuid, bool>,
    ) -> Result<(), Ended> {
        let now = Instant::now();
        let waiting: Vec<Uuid> = self
            .wanted
            .iter()
            .filter(|l| !subs.contains_key(l))
            .filter(|l| self.retries.get(l).is_none_or(|r| r.at <= now))
            .take(MAX_LISTS_PER_SOCKET.saturating_sub(subs.len()))
            .copied()
            .collect();
        for list in waiting {
            self.subscribe(socket, subs, list).await?;
        }
        Ok(())
    }

    async fn subscribe(
        &mut self,
        socket: &mut Socket,
        subs: &mut HashMap<Uuid, bool>,
        list: Uuid,
    ) -> Result<(), Ended> {
        if subs.len() >= MAX_LISTS_PER_SOCKET {
            let cell = self.shared.cell(list);
            cell.status.send_modify(|s| {
                s.last_error = Some(format!(
                    "more than {MAX_LISTS_PER_SOCKET} lists: this one waits for a free place"
                ));
            });
            return Ok(());
        }
        subs.insert(list, false);
        let cell = self.shared.cell(list);
        cell.has_server_state.store(false, Ordering::Relaxed);
        cell.status.send_modify(|s| {
            s.state = SyncState::Connecting;
            s.subscribes += 1;
        });
        send_frame(socket, MuxFrame::Subscribe { list, ack: true }).await
    }

    async fn on_command(
        &mut self,
        socket: &mut Socket,
        subs: &mut HashMap<Uuid, bool>,
        command: Command,
    ) -> Result<(), Ended> {
        match command {
            Command::Sync(list) => {
                self.wanted.insert(list);
                if !subs.contains_key(&list) {
                    self.subscribe(socket, subs, list).await?;
                }
            }
            Command::Forget(list) => {
                self.wanted.remove(&list);
                self.retries.remove(&list);
                if subs.remove(&list).is_some() {
                    self.unsubscribe(socket, list).await?;
                    self.fill_free_places(socket, subs).await?;
                }
            }
            Command::Local { list, update } => {
                if subs.get(&list) == Some(&true) {
                    let payload = protocol::encode_update(update);
                    send_frame(
                        socket,
                        MuxFrame::Data {
                            list,
                            payload: &payload,
                        },
                    )
                    .await?;
                }
            }
            Command::Families => self.sync_families(socket, subs).await?,
            Command::SessionChanged => {
                let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                return Err(Ended::SessionChanged);
            }
        }
        Ok(())
    }

    async fn on_frame(
        &mut self,
        socket: &mut Socket,
        subs: &mut HashMap<Uuid, bool>,
        bytes: &[u8],
    ) -> Result<(), Ended> {
        let frame = MuxFrame::decode(bytes).map_err(|e| {
            Ended::Lost(format!("the server sent a frame that does not parse: {e}"))
        })?;
        match frame {
            MuxFrame::Data { list, payload } => {
                let Some(joined) = subs.get_mut(&list) else {
                    return Ok(());
                };
                let first = !*joined;
                *joined = true;
                if let Err(Some(ended)) = self.on_data(socket, list, payload, first).await {
                    return Err(ended);
                }
            }
            MuxFrame::Closed { list, code, reason } => {
                if code == 1000 {
                    // Confirms one of our unsubscribes.
                    if let Some(n) = self.unsubscribing.get_mut(&list) {
                        *n -= 1;
                        if *n == 0 {
                            self.unsubscribing.remove(&list);
                        }
                    }
                    return Ok(());
                }
                let Some(joined) = subs.get(&list).copied() else {
                    // About a subscription that ended already.
                    return Ok(());
                };
                let cell = self.shared.cell(list);
                match code {
                    4404 => match self.fate(list).await {
                        ListFate::Gone => {
                            subs.remove(&list);
                            let reason = if reason.is_empty() {
                                "no such list"
                            } else {
                                reason
                            };
                            let family = self.shared.store.family_of(list).await.ok().flatten();
                            if family.is_some() {
                                self.evict(list, code, reason).await;
                            } else {
                                self.stop(list, code, reason);
                            }
                        }
                        ListFate::Forbidden => {
                            subs.remove(&list);
                            self.stop(list, 4403, "access to the list was revoked");
                        }
                        // The list is there: a late answer to a frame sent
                        // before the server ended an earlier subscription;
                        // this one's step 1 is still to come.
                        ListFate::Exists if !joined => {}
                        ListFate::Exists => {
                            subs.remove(&list);
                            self.retry_later(list, code, reason);
                        }
                        ListFate::Unknown(e) => {
                            subs.remove(&list);
                            let why = format!("{reason} (the server could not be asked: {e})");
                            self.retry_later(list, code, &why);
                        }
                    },
                    4403 | 4400 | 4413 | 4414 => {
                        subs.remove(&list);
                        self.stop(list, code, reason);
                    }
                    _ => {
                        // Busy or shutting down: ask again later.
                        subs.remove(&list);
                        self.retry_later(list, code, reason);
                    }
                }
                cell.has_server_state.store(false, Ordering::Relaxed);
                if subs.len() < MAX_LISTS_PER_SOCKET {
                    self.fill_free_places(socket, subs).await?;
                }
            }
            MuxFrame::Subscribe { .. } | MuxFrame::Unsubscribe { .. } => {
                return Err(Ended::Lost("the server sent a client frame".into()));
            }
        }
        Ok(())
    }

    /// Subscribes `list` again after a backoff of its own.
    fn retry_later(&mut self, list: Uuid, code: u16, reason: &str) {
        let cell = self.shared.cell(list);
        cell.has_server_state.store(false, Ordering::Relaxed);
        cell.set_state(SyncState::Connecting);
        cell.status
            .send_modify(|s| s.last_error = Some(format!("{code}: {reason}")));
        let (initial, max) = (
            self.shared.config.backoff_initial,
            self.shared.config.backoff_max,
        );
        let retry = self.retries.entry(list).or_insert_with(|| Retry {
            at: Instant::now(),
            backoff: Backoff::new(initial, max),
        });
        retry.at = Instant::now() + retry.backoff.next();
    }

    /// Asks the server what became of a list closed with 4404.
    async fn fate(&self, list: Uuid) -> ListFate {
        match self.shared.auth.current().await {
            Some(session) => crate::family::fate(&self.shared, list, &session.access_token).await,
            None => ListFate::Unknown(crate::RestError::Network("signed out".into())),
        }
    }

    /// Handles one data frame of `list`. An error that is the list's own
    /// (a damaged message) is logged; one of the socket ends it.
    async fn on_data(
        &mut self,
        socket: &mut Socket,
        list: Uuid,
        payload: &[u8],
        first: bool,
    ) -> Result<(), Option<Ended>> {
        let cell = self.shared.cell(list);
        if first {
            cell.set_state(SyncState::Syncing);
            self.retries.remove(&list);
            self.auth_refusals = 0;
        }
        let messages = protocol::split_frame(payload).map_err(|e| {
            tracing::warn!(%list, error = %e, "the server sent a message that does not parse");
            None
        })?;
        let mut updates = Vec::new();
        let mut got_state = false;
        for message in messages {
            match message {
                Message::Sync(SyncMessage::SyncStep1(theirs)) => {
                    let missing = self.shared.missing(list, &theirs).await.map_err(|e| {
                        self.list_error(list, &e);
                        None
                    })?;
                    self.answer_step1(socket, list, missing).await?;
                }
                Message::Sync(SyncMessage::SyncStep2(update)) => {
                    updates.push(update);
                    got_state = true;
                }
                Message::Sync(SyncMessage::Update(update)) => updates.push(update),
                Message::Custom(protocol::MSG_DURABLE_ACK, body) => {
                    // Updates before the acknowledgement are applied first.
                    if self.apply(list, &mut updates).await && got_state {
                        cell.has_server_state.store(true, Ordering::Relaxed);
                    }
                    if let Some(stored) = protocol::decode_durable_ack(&body)
                        && let Err(e) = self.shared.acknowledged(list, &stored).await
                    {
                        self.list_error(list, &e);
                    }
                }
                Message::Auth(Some(reason)) => {
                    cell.status.send_modify(|s| s.last_error = Some(reason));
                }
                _ => {}
            }
        }
        if self.apply(list, &mut updates).await && got_state {
            cell.has_server_state.store(true, Ordering::Relaxed);
        }
        if first {
            let ours = self.shared.state_vector(list).await.map_err(|e| {
                self.list_error(list, &e);
                None
            })?;
            let ask = protocol::encode_sync_step1(&ours);
            send_frame(
                socket,
                MuxFrame::Data {
                    list,
                    payload: &ask,
                },
            )
            .await?;
        }
        cell.settle();
        self.shared.refresh_overall();
        Ok(())
    }

    /// Applies the updates received so far; whether they all applied.
    async fn apply(&self, list: Uuid, updates: &mut Vec<Vec<u8>>) -> bool {
        if updates.is_empty() {
            return true;
        }
        let applied = self.shared.apply_remote(list, updates).await;
        updates.clear();
        match applied {
            Ok(()) => true,
            Err(e) => {
                self.list_error(list, &e);
                false
            }
        }
    }

    /// Answers the server's sync step 1 with what it lacks. An answer over
    /// [`MAX_FRAME_BYTES`] (a long offline backlog) goes as the unsent
    /// local edits, merged into updates under the limit, then an empty
    /// step 2 that asks for the acknowledgement: one message over the
    /// server's limit would close the whole socket, every time.
    async fn answer_step1(
        &mut self,
        socket: &mut Socket,
        list: Uuid,
        missing: Vec<u8>,
    ) -> Result<(), Option<Ended>> {
        if missing.len() <= MAX_FRAME_BYTES {
            let answer = protocol::encode_sync_step2(missing);
            return Ok(send_frame(
                socket,
                MuxFrame::Data {
                    list,
                    payload: &answer,
                },
            )
            .await?);
        }
        let unsent = self.shared.store.undurable(list).await.map_err(|e| {
            self.list_error(list, &e.into());
            None
        })?;
        let mut group: Vec<Vec<u8>> = Vec::new();
        let mut group_bytes = 0;
        for update in unsent {
            if update.len() > MAX_FRAME_BYTES {
                self.stop(list, 4413, "a local edit is larger than the server takes");
                return Err(None);
            }
            if group_bytes + update.len() > MAX_FRAME_BYTES {
                self.send_merged(socket, list, std::mem::take(&mut group))
                    .await?;
                group_bytes = 0;
            }
            group_bytes += update.len();
            group.push(update);
        }
        self.send_merged(socket, list, group).await?;
        let ask_ack = protocol::encode_sync_step2(larder_crdt::state::EMPTY_UPDATE.to_vec());
        Ok(send_frame(
            socket,
            MuxFrame::Data {
                list,
                payload: &ask_ack,
            },
        )
        .await?)
    }

    async fn send_merged(
        &mut self,
        socket: &mut Socket,
        list: Uuid,
        group: Vec<Vec<u8>>,
    ) -> Result<(), Option<Ended>> {
        if group.is_empty() {
            return Ok(());
        }
        let merged = larder_crdt::state::merge_updates(group).map_err(|e| {
            self.list_error(list, &crate::Error::Protocol(e.to_string()));
            None
        })?;
        let message = protocol::encode_update(merged);
        Ok(send_frame(
            socket,
            MuxFrame::Data {
                list,
                payload: &message,
            },
        )
        .await?)
    }

    fn list_error(&self, list: Uuid, error: &crate::Error) {
        tracing::warn!(%list, %error, "syncing a list failed");
        self.shared
            .cell(list)
            .status
            .send_modify(|s| s.last_error = Some(error.to_string()));
    }
}

/// `ws://host/v1/sync?token=...` for a server's base URL.
fn socket_url(server: &str, token: &str) -> String {
    let base = if let Some(rest) = server.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = server.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        server.to_owned()
    };
    format!("{base}/v1/sync?token={token}")
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

async fn send_frame(socket: &mut Socket, frame: MuxFrame<'_>) -> Result<(), Ended> {
    send(socket, WsMessage::Binary(frame.encode().into())).await
}

async fn send(socket: &mut Socket, message: WsMessage) -> Result<(), Ended> {
    match tokio::time::timeout(Duration::from_secs(10), socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Ended::Lost(e.to_string())),
        Err(_) => Err(Ended::Lost("sending timed out".into())),
    }
}

//! A connection's queue of outgoing frames: the room pushes without
//! waiting, the connection's task pops. It allocates nothing until a frame
//! is queued and gives back what a burst made it grow once it is drained,
//! so an idle connection holds a few words here, whatever it was sent
//! before. (A bounded tokio channel allocates a block of 32 slots up front.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
pub use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

use super::Outbound;

/// Slots a drained queue may keep; beyond this it shrinks back.
const KEEP_SLOTS: usize = 8;

struct Shared {
    state: Mutex<State>,
    /// Wakes the receiver: a frame was queued or the last sender went.
    ready: Notify,
}

struct State {
    frames: VecDeque<Outbound>,
    capacity: usize,
    senders: usize,
    is_receiver_gone: bool,
}

/// The room's end. Cloning it adds a sender.
pub struct OutboundSender(Arc<Shared>);

/// The connection's end.
pub struct OutboundReceiver(Arc<Shared>);

/// A queue holding at most `capacity` frames (at least one).
pub fn queue(capacity: usize) -> (OutboundSender, OutboundReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            frames: VecDeque::new(),
            capacity: capacity.max(1),
            senders: 1,
            is_receiver_gone: false,
        }),
        ready: Notify::new(),
    });
    (OutboundSender(shared.clone()), OutboundReceiver(shared))
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("outbound queue lock poisoned")
    }
}

impl OutboundSender {
    /// Queues `frame`; refused when the queue is full or the connection
    /// stopped reading it.
    pub fn try_send(&self, frame: Outbound) -> Result<(), TrySendError<Outbound>> {
        {
            let mut state = self.0.lock();
            if state.is_receiver_gone {
                return Err(TrySendError::Closed(frame));
            }
            if state.frames.len() >= state.capacity {
                return Err(TrySendError::Full(frame));
            }
            state.frames.push_back(frame);
        }
        self.0.ready.notify_one();
        Ok(())
    }
}

impl Clone for OutboundSender {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        OutboundSender(self.0.clone())
    }
}

impl Drop for OutboundSender {
    fn drop(&mut self) {
        let last = {
            let mut state = self.0.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.0.ready.notify_one();
        }
    }
}

impl OutboundReceiver {
    /// The next frame; `None` once it is empty and every sender is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        loop {
            match self.try_recv() {
                Ok(frame) => return Some(frame),
                Err(TryRecvError::Disconnected) => return None,
                // A frame queued meanwhile left a permit: no wake-up is lost.
                Err(TryRecvError::Empty) => self.0.ready.notified().await,
            }
        }
    }

    pub fn try_recv(&mut self) -> Result<Outbound, TryRecvError> {
        let mut state = self.0.lock();
        match state.frames.pop_front() {
            Some(frame) => {
                if state.frames.is_empty() && state.frames.capacity() > KEEP_SLOTS {
                    state.frames.shrink_to(KEEP_SLOTS);
                }
                Ok(frame)
            }
            None if state.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.is_receiver_gone = true;
        state.frames = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(n: u8) -> Outbound {
        Outbound {
            frame: Bytes::from(vec![n]),
            reply: None,
        }
    }

    #[tokio::test]
    async fn frames_come_out_in_order_up_to_the_capacity() {
        let (tx, mut rx) = queue(2);
        tx.try_send(frame(1)).expect("room");
        tx.try_send(frame(2)).expect("room");
        assert!(matches!(tx.try_send(frame(3)), Err(TrySendError::Full(_))));
        assert_eq!(rx.recv().await.expect("a frame").frame[0], 1);
        assert_eq!(rx.try_recv().expect("a frame").frame[0], 2);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_frame_and_ends_with_the_last_sender() {
        let (tx, mut rx) = queue(4);
        let second = tx.clone();
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await.map(|f| f.frame[0]);
            let end = rx.recv().await.map(|f| f.frame[0]);
            (first, end)
        });
        tokio::task::yield_now().await;
        tx.try_send(frame(7)).expect("room");
        drop(tx);
        drop(second);
        assert_eq!(waiter.await.expect("joins"), (Some(7), None));
    }

    #[test]
    fn a_gone_receiver_refuses_frames_and_a_drained_burst_is_given_back() {
        let (tx, mut rx) = queue(1000);
        for n in 0..200 {
            tx.try_send(frame(n as u8)).expect("room");
        }
        while rx.try_recv().is_ok() {}
        assert!(tx.0.lock().frames.capacity() <= KEEP_SLOTS);
        drop(rx);
        assert!(matches!(
            tx.try_send(frame(1)),
            Err(TrySendError::Closed(_))
        ));
    }
}

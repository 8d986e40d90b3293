//! The service manager's side of a start and a stop: sockets it bound for us (socket activation,
//! `LISTEN_FDS`, through `listenfd`) and what we tell it (`NOTIFY_SOCKET`: READY, STATUS,
//! STOPPING, WATCHDOG, through `sd-notify`). Outside systemd the environment names neither and
//! nothing here does anything.

use std::time::Duration;

use log::{info, warn};
use sd_notify::NotifyState;

use crate::net::Listener;

/// The listening sockets the service manager passed, if it passed any. Stream sockets only: a
/// datagram or non-listening one is a startup error naming its position.
pub fn inherited_listeners() -> Result<Option<Vec<Listener>>, String> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(fds.len());
    for i in 0..fds.len() {
        let taken = match fds.take_tcp_listener(i) {
            Ok(Some(l)) => Listener::from_tcp(l),
            Ok(None) => continue,
            Err(_) => match fds.take_unix_listener(i) {
                Ok(Some(l)) => Listener::from_unix(l),
                Ok(None) => continue,
                Err(e) => Err(e),
            },
        };
        let listener = taken.map_err(|e| {
            format!(
                "socket {} passed by the service manager (LISTEN_FDS) is not a listening TCP or \
                 unix stream socket: {e}",
                i + 3
            )
        })?;
        out.push(listener);
    }
    info!(
        "serving {} socket(s) passed by the service manager; -l/-p are not bound",
        out.len()
    );
    Ok(Some(out))
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("cannot notify the service manager: {e}");
    }
}

/// Every shard serves.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Draining after a stop signal.
pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("draining connections"),
    ]);
}

/// How often to ping the watchdog (half the manager's timeout), when it watches us.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// The server is alive (every shard answered).
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

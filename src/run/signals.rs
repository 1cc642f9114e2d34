//! The signals that end a run. Each signal whose default action would terminate kiln (Ctrl-C's
//! SIGINT, SIGTERM from a supervisor or `kill`, SIGHUP when the terminal goes away, SIGQUIT,
//! SIGALRM, SIGUSR1/2) is caught for the whole run, so none of them can end kiln while jobs
//! still run or before their folders, containers and processes are removed: the first one
//! cancels the run, and the run then ends like after Ctrl-C, with the status a shell reports
//! for that signal (128 + its number).

use kiln_scheduler::drive::{Interrupt, Interrupts};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Every signal whose default action terminates the process and that a user or a supervisor
/// sends to stop a program, with its name for messages (Ctrl-C for SIGINT, as users know it).
fn terminating() -> [(SignalKind, &'static str); 7] {
    [
        (SignalKind::interrupt(), "Ctrl-C"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::quit(), "SIGQUIT"),
        (SignalKind::alarm(), "SIGALRM"),
        (SignalKind::user_defined1(), "SIGUSR1"),
        (SignalKind::user_defined2(), "SIGUSR2"),
    ]
}

/// The terminating signals kiln received, in order of arrival.
pub struct Signals {
    arrivals: UnboundedReceiver<i32>,
    /// The first signal: it decides the exit status.
    first: Option<i32>,
    /// How many arrived so far.
    count: u32,
}

impl Signals {
    /// Starts listening. From here on none of these signals ends the process by itself; must
    /// run inside a Tokio runtime.
    pub fn listen() -> Signals {
        let (tx, arrivals) = unbounded_channel();
        for (kind, _) in terminating() {
            // A handler that cannot be installed leaves that signal's default effect (exit).
            let Ok(mut stream) = signal(kind) else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(kind.as_raw_value()).is_err() {
                        break;
                    }
                }
            });
        }
        Signals {
            arrivals,
            first: None,
            count: 0,
        }
    }

    /// Waits for the next signal and returns its number and how many arrived in all.
    pub async fn recv(&mut self) -> (i32, u32) {
        match self.arrivals.recv().await {
            Some(number) => self.record(number),
            // Every listener is gone (none could be installed): nothing will ever arrive.
            None => std::future::pending().await,
        }
    }

    /// The signals that arrived while nobody waited (during set-up): whether there was any.
    pub fn arrived(&mut self) -> bool {
        while let Ok(number) = self.arrivals.try_recv() {
            self.record(number);
        }
        self.count > 0
    }

    fn record(&mut self, number: i32) -> (i32, u32) {
        self.first.get_or_insert(number);
        self.count += 1;
        (number, self.count)
    }

    /// The exit status of a run ended by a signal, as shells report it: 128 + the first one.
    pub fn exit_status(&self) -> Option<u8> {
        self.first.and_then(|n| u8::try_from(128 + n).ok())
    }

    /// Resolves once `total` signals have arrived in all (for the "third Ctrl-C exits at once"
    /// escape while cleaning up).
    pub async fn until_count(&mut self, total: u32) {
        while self.count < total {
            self.recv().await;
        }
    }
}

/// A signal's name for messages (`SIGTERM`, or Ctrl-C for SIGINT).
pub fn describe(number: i32) -> String {
    terminating()
        .into_iter()
        .find(|(kind, _)| kind.as_raw_value() == number)
        .map_or_else(|| format!("signal {number}"), |(_, name)| name.to_owned())
}

/// Whether `number` is SIGINT, which a user at the terminal sends (and can send again).
pub fn is_interrupt(number: i32) -> bool {
    number == SignalKind::interrupt().as_raw_value()
}

impl Interrupts for Signals {
    async fn next(&mut self) -> Interrupt {
        let (signal, count) = self.recv().await;
        Interrupt { signal, count }
    }
}

//! Reading the XDP program's aya-log messages in a test: a `log::Log` that keeps every
//! record, fed by the data plane's log ring on demand.

use std::sync::{Arc, Mutex};

use aya_log::EbpfLogger;
use balancer_user::dataplane::DataPlane;

/// One message of the XDP program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its level.
    pub level: log::Level,
    /// Its target.
    pub target: String,
    /// The formatted text.
    pub text: String,
}

/// Collects the records handed to it.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Message>>>);

impl log::Log for Collector {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().expect("collector lock").push(Message {
            level: record.level(),
            target: record.target().to_string(),
            text: record.args().to_string(),
        });
    }

    fn flush(&self) {}
}

/// The log ring of a test data plane and the messages read from it so far.
pub struct KernelLog {
    ring: EbpfLogger<Collector>,
    messages: Collector,
}

impl KernelLog {
    /// Takes the log ring of `plane`.
    pub fn open(plane: &mut DataPlane) -> Self {
        let messages = Collector::default();
        let ring = plane
            .kernel_log(messages.clone())
            .expect("open the kernel log ring");
        Self { ring, messages }
    }

    /// Reads what the program wrote since the last call and returns it.
    pub fn read(&mut self) -> Vec<Message> {
        self.ring.flush();
        std::mem::take(&mut *self.messages.0.lock().expect("collector lock"))
    }
}

/// Keeps the calling thread on the CPU it runs on, so that every `BPF_PROG_TEST_RUN` of
/// the test meets the same per-CPU rate-limit state.
pub fn stay_on_this_cpu() {
    // SAFETY: plain system calls on a zeroed, then filled, CPU set of this thread.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(cpu >= 0, "sched_getcpu");
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// What aya logged at WARN or above through the `log` crate, from the first
/// [`capture_aya_warnings`] on.
static AYA_WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keeps aya's warnings in [`AYA_WARNINGS`].
struct AyaWarnings;

impl log::Log for AyaWarnings {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn && metadata.target().starts_with("aya")
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            AYA_WARNINGS
                .lock()
                .expect("warnings lock")
                .push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// Makes this process's `log` logger keep aya's warnings (idempotent).
pub fn capture_aya_warnings() {
    if log::set_logger(&AyaWarnings).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// aya's warnings since [`capture_aya_warnings`].
pub fn aya_warnings() -> Vec<String> {
    AYA_WARNINGS.lock().expect("warnings lock").clone()
}

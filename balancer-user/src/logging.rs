//! The daemon's log on standard error: text lines (the default) or one JSON object a line
//! (`--log-format json`: timestamp, level, fields with the message, target), at the level
//! `RUST_LOG` sets (default `info`). The XDP program's messages (aya-log's `log` records)
//! go through it too.

use tracing::Subscriber;
use tracing_subscriber::{fmt::MakeWriter, util::SubscriberInitExt as _, EnvFilter};

use crate::cli::LogFormat;

/// Makes the daemon's log the process's, written to standard error in `format`.
pub fn init(format: LogFormat) {
    subscriber(format, std::io::stderr).init();
}

/// The log in `format`, written to `writer`.
fn subscriber<W>(format: LogFormat, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `format` writes for two records.
    fn logged(format: LogFormat) -> Vec<String> {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let log = subscriber(format, move || sink.clone());
        tracing::subscriber::with_default(log, || {
            tracing::info!(
                service = "web",
                addr = "198.18.0.101",
                "backend health changed"
            );
            tracing::warn!("writing the event history failed: \"disk\" full");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn json_lines_parse_as_json_with_level_message_and_fields_and_text_lines_do_not() {
        let lines = logged(LogFormat::Json);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let records: Vec<serde_json::Value> = lines
            .iter()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
            .collect();
        assert_eq!(records[0]["level"], "INFO");
        assert_eq!(records[0]["fields"]["message"], "backend health changed");
        assert_eq!(records[0]["fields"]["service"], "web");
        assert_eq!(records[1]["level"], "WARN");
        assert_eq!(
            records[1]["fields"]["message"],
            "writing the event history failed: \"disk\" full"
        );
        assert!(records.iter().all(|r| r["timestamp"].is_string()));

        let lines = logged(LogFormat::Text);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("INFO") && lines[0].contains("backend health changed"));
        assert!(lines
            .iter()
            .all(|line| serde_json::from_str::<serde_json::Value>(line).is_err()));
    }
}

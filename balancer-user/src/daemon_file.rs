//! The daemon's config file, `balancer daemon --config FILE`: TOML, one key per daemon flag.
//!
//! ```toml
//! iface = "eth0"
//! xdp_mode = "native"
//! state_dir = "/var/lib/balancer"
//! socket = "/run/balancer.sock"
//! metrics_listen = "127.0.0.1:9651"
//! conntrack_size = 262144
//! retire_timeout = "1h"
//! empty_state = false
//! ```
//!
//! A key is a flag's long name with `_` for `-`, and the global `socket`. The keys are read
//! from the command-line definition itself, so every daemon flag has its key, and a value is
//! checked by the flag's own parser. A flag that takes no value is a boolean (`true` gives
//! it); a flag that takes a number is a TOML integer; every other value is a string. A flag
//! given on the command line (or by its environment variable) wins over the file. An
//! unknown key, a value of the wrong type or a bad value (also one the command line
//! overrides), a file that does not parse and a missing file are refused in one line naming
//! the file (and the key), before anything is touched. `--config` is not a key of the file
//! (no includes), nor is the CLI's `--timeout`.

use std::{
    any::TypeId,
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{
    error::{ContextKind, ContextValue},
    parser::ValueSource,
    Arg, ArgAction, ArgMatches, CommandFactory as _, FromArgMatches as _,
};

use crate::cli::{Cli, DaemonArgs};

/// The id of `--config` in [`DaemonArgs`].
const CONFIG: &str = "config";
/// The id of the global `--socket` in [`Cli`]: the daemon's control socket.
const SOCKET: &str = "socket";

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum DaemonFileError {
    /// The file cannot be read (missing, unreadable, not UTF-8).
    #[error("cannot read the config file {}", .file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{}, line {line}: {message}", .file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The line of the error (from 1).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A key that is no daemon flag.
    #[error("{}: unknown key `{key}` (the keys: {known})", .file.display())]
    Unknown {
        /// The file.
        file: PathBuf,
        /// The key.
        key: String,
        /// Every key, comma-separated.
        known: String,
    },
    /// A value of the wrong TOML type.
    #[error("{}: {key} must be {expected}, not {found}", .file.display())]
    Type {
        /// The file.
        file: PathBuf,
        /// The key.
        key: String,
        /// The type it takes.
        expected: &'static str,
        /// The type it has.
        found: &'static str,
    },
    /// A value its flag's parser refuses, or settings that do not go together.
    #[error("{}: {}{message}", .file.display(), .key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Value {
        /// The file.
        file: PathBuf,
        /// The key, when the refusal names one.
        key: Option<String>,
        /// The parser's line.
        message: String,
    },
    /// The command line itself does not parse, or is not `balancer daemon`.
    #[error("the command line: {0}")]
    CommandLine(String),
}

/// The daemon's flags and control socket from `argv` (`balancer ... daemon ...`, the
/// binary first) and, with `--config FILE`, from that file where `argv` does not give them.
pub fn merge(argv: &[OsString]) -> Result<(DaemonArgs, PathBuf), DaemonFileError> {
    merge_with(argv, |file| std::fs::read_to_string(file))
}

/// [`merge`], reading the file with `read`.
fn merge_with(
    argv: &[OsString],
    read: impl FnOnce(&Path) -> std::io::Result<String>,
) -> Result<(DaemonArgs, PathBuf), DaemonFileError> {
    let mut command = Cli::command();
    command.build();
    let matches = command
        .clone()
        .try_get_matches_from(argv)
        .map_err(|e| DaemonFileError::CommandLine(first_line(&e)))?;
    let given = daemon_matches(&matches)?;
    let Some(file) = given.get_one::<PathBuf>(CONFIG).cloned() else {
        return daemon(given);
    };
    let text = read(&file).map_err(|source| DaemonFileError::Read {
        file: file.clone(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| DaemonFileError::Syntax {
        file: file.clone(),
        line: e.span().map_or(1, |span| line_of(&text, span.start)),
        message: e.message().to_string(),
    })?;
    let keys = keys(&command);
    // `balancer daemon --config FILE` and every value of the file: each is checked by its
    // flag's parser, also one the command line overrides.
    let mut alone: Vec<OsString> = argv.iter().take(1).cloned().collect();
    alone.extend(["daemon".into(), "--config".into(), file.clone().into()]);
    let mut merged = argv.to_vec();
    for (key, value) in &table {
        let Some(arg) = keys.iter().find(|arg| key_of(arg) == *key) else {
            let known: Vec<String> = keys.iter().map(key_of).collect();
            return Err(DaemonFileError::Unknown {
                file,
                key: key.clone(),
                known: known.join(", "),
            });
        };
        let tokens = tokens(arg, value).map_err(|expected| DaemonFileError::Type {
            file: file.clone(),
            key: key.clone(),
            expected,
            found: value.type_str(),
        })?;
        if !on_command_line(given, arg) {
            merged.extend(tokens.iter().cloned());
        }
        alone.extend(tokens);
    }
    let refused = |e: clap::Error| DaemonFileError::Value {
        file: file.clone(),
        key: blamed(&e, &keys),
        message: first_line(&e),
    };
    command
        .clone()
        .try_get_matches_from(&alone)
        .map_err(refused)?;
    let matches = command.try_get_matches_from(&merged).map_err(refused)?;
    daemon(daemon_matches(&matches)?)
}

/// The matches of the `daemon` subcommand.
fn daemon_matches(matches: &ArgMatches) -> Result<&ArgMatches, DaemonFileError> {
    match matches.subcommand() {
        Some(("daemon", given)) => Ok(given),
        _ => Err(DaemonFileError::CommandLine("not `balancer daemon`".into())),
    }
}

/// The daemon's flags and socket from its matches.
fn daemon(matches: &ArgMatches) -> Result<(DaemonArgs, PathBuf), DaemonFileError> {
    let args = DaemonArgs::from_arg_matches(matches)
        .map_err(|e| DaemonFileError::CommandLine(first_line(&e)))?;
    let socket = matches
        .get_one::<PathBuf>(SOCKET)
        .cloned()
        .ok_or_else(|| DaemonFileError::CommandLine("no --socket".into()))?;
    Ok((args, socket))
}

/// The flags the file may set, from the built command line: the daemon's own (but
/// `--config` and help) and the global `--socket`.
fn keys(command: &clap::Command) -> Vec<Arg> {
    command
        .find_subcommand("daemon")
        .map(|daemon| {
            daemon
                .get_arguments()
                .filter(|arg| {
                    let id = arg.get_id().as_str();
                    let own = !arg.is_global_set() || id == SOCKET;
                    let help = matches!(
                        arg.get_action(),
                        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong
                    );
                    own && !help && id != CONFIG && arg.get_long().is_some()
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The key of a flag: its long name with `_` for `-`.
fn key_of(arg: &Arg) -> String {
    arg.get_long().unwrap_or_default().replace('-', "_")
}

/// `--flag=VALUE` (or `--flag` for `true`, nothing for `false`) for a value of the file;
/// the type it takes when `value` has another. (With `=`, a value that starts with `-` is
/// not taken for a flag.)
fn tokens(arg: &Arg, value: &toml::Value) -> Result<Vec<OsString>, &'static str> {
    let flag = format!("--{}", arg.get_long().unwrap_or_default());
    match arg.get_action() {
        ArgAction::SetTrue => match value {
            toml::Value::Boolean(true) => Ok(vec![flag.into()]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            _ => Err("a boolean"),
        },
        ArgAction::Set if integer(arg) => match value {
            toml::Value::Integer(n) => Ok(vec![format!("{flag}={n}").into()]),
            _ => Err("an integer"),
        },
        ArgAction::Set => match value {
            toml::Value::String(text) => {
                let mut token = OsString::from(format!("{flag}="));
                token.push(text);
                Ok(vec![token])
            }
            _ => Err("a string"),
        },
        _ => Err("set on the command line (the file cannot give this flag)"),
    }
}

/// Whether the flag's parser makes a number.
fn integer(arg: &Arg) -> bool {
    let made = arg.get_value_parser().type_id();
    [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<isize>(),
    ]
    .into_iter()
    .any(|number| made == number)
}

/// Whether the command line (or the flag's environment variable) gave `arg`.
fn on_command_line(matches: &ArgMatches, arg: &Arg) -> bool {
    matches!(
        matches.value_source(arg.get_id().as_str()),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The key of the flag a parser error names, if it names one.
fn blamed(error: &clap::Error, keys: &[Arg]) -> Option<String> {
    let Some(ContextValue::String(named)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    keys.iter()
        .find(|arg| {
            let flag = format!("--{}", arg.get_long().unwrap_or_default());
            named == &flag || named.starts_with(&format!("{flag} "))
        })
        .map(key_of)
}

/// A parser error's first line, without clap's `error: `, and the values it takes when it
/// lists them.
fn first_line(error: &clap::Error) -> String {
    let text = error.to_string();
    let line = text.lines().next().unwrap_or_default();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match error.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(values)) => format!("{line} (one of: {})", values.join(", ")),
        _ => line.to_string(),
    }
}

/// The line (from 1) of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cli::XdpModeArg;

    const FILE: &str = "/etc/balancer/daemon.toml";

    /// `balancer ARGS...` merged with a file of `text`.
    fn merged(args: &[&str], text: &str) -> Result<(DaemonArgs, PathBuf), DaemonFileError> {
        let argv: Vec<OsString> = std::iter::once("balancer")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        merge_with(&argv, |file| {
            assert_eq!(file, Path::new(FILE));
            Ok(text.to_string())
        })
    }

    /// The refusal's line.
    fn refusal(args: &[&str], text: &str) -> String {
        let error = merged(args, text).expect_err("refused");
        crate::error::one_line(&error)
    }

    /// A value of each daemon flag that is not its default, as a TOML value. A new daemon
    /// flag needs one here, and so a check that the file sets it.
    const SAMPLES: &[(&str, &str)] = &[
        ("iface", r#""eth9""#),
        ("xdp_mode", r#""skb""#),
        ("state_dir", r#""/srv/balancer""#),
        ("pin_dir", r#""/sys/fs/bpf/lb""#),
        ("conntrack_size", "4096"),
        ("empty_state", "true"),
        ("hash_seed", "7"),
        ("flow_idle", "30"),
        ("retire_timeout", r#""10m""#),
        ("metrics_listen", r#""127.0.0.1:9651""#),
        ("log_format", r#""json""#),
        ("store", r#""etcd://198.18.0.1:2379/lb""#),
        ("host_name", r#""lb-1""#),
        ("announce_table", "100"),
        ("sync_listen", r#""198.18.1.1:7070""#),
        ("leader_ttl", r#""2s""#),
        ("socket", r#""/run/lb.sock""#),
    ];

    #[test]
    fn every_daemon_flag_has_a_key_that_sets_it() {
        let mut command = Cli::command();
        command.build();
        let keys: Vec<String> = keys(&command).iter().map(key_of).collect();
        let config = ["daemon", "--config", FILE];
        let (default_args, default_socket) = merged(&config, "").expect("an empty file");
        let defaults = format!("{default_args:?} {default_socket:?}");
        for key in &keys {
            let Some((_, value)) = SAMPLES.iter().find(|(k, _)| k == key) else {
                panic!("daemon flag for key {key} has no sample: add one to SAMPLES");
            };
            let (args, socket) = merged(&config, &format!("{key} = {value}"))
                .unwrap_or_else(|e| panic!("{key} = {value}: {}", crate::error::one_line(&e)));
            assert_ne!(
                format!("{args:?} {socket:?}"),
                defaults,
                "{key} = {value} changed nothing"
            );
        }
        for (key, _) in SAMPLES {
            assert!(keys.contains(&key.to_string()), "{key} is no daemon flag");
        }
        assert!(
            !keys
                .iter()
                .any(|k| k == "config" || k == "timeout" || k == "help"),
            "{keys:?}"
        );
    }

    #[test]
    fn the_shipped_example_names_every_key_and_parses() {
        let example = include_str!("../../packaging/daemon.toml");
        let mut command = Cli::command();
        command.build();
        for key in keys(&command).iter().map(key_of) {
            let named = example.lines().any(|line| {
                let line = line.trim_start_matches(['#', ' ']);
                line.starts_with(&format!("{key} ="))
            });
            assert!(named, "packaging/daemon.toml does not show {key}");
        }
        let (args, socket) = merged(&["daemon", "--config", FILE], example).expect("example");
        assert_eq!(args.iface.as_deref(), Some("eth0"));
        assert_eq!(args.state_dir, Path::new("/var/lib/balancer"));
        assert_eq!(socket, Path::new(crate::cli::DEFAULT_SOCKET));
    }

    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("```toml\niface")
            .expect("README has a TOML example of the daemon's file")
            + 8;
        let end = start + readme[start..].find("```").expect("the example ends");
        let (args, _) = merged(&["daemon", "--config", FILE], &readme[start..end])
            .unwrap_or_else(|e| panic!("{}", crate::error::one_line(&e)));
        assert_eq!(args.iface.as_deref(), Some("eth0"));
        assert_eq!(args.metrics_listen, Some("127.0.0.1:9651".parse().unwrap()));
    }

    #[test]
    fn the_file_sets_what_the_command_line_does_not() {
        let text = SAMPLES
            .iter()
            .map(|(key, value)| format!("{key} = {value}\n"))
            .collect::<String>();
        let (args, socket) = merged(&["daemon", "--config", FILE], &text).expect("merged");
        assert_eq!(args.iface.as_deref(), Some("eth9"));
        assert!(matches!(args.xdp_mode, Some(XdpModeArg::Skb)));
        assert_eq!(args.state_dir, Path::new("/srv/balancer"));
        assert_eq!(args.pin_dir, Path::new("/sys/fs/bpf/lb"));
        assert_eq!(args.conntrack_size, Some(4096));
        assert!(args.empty_state);
        assert_eq!((args.hash_seed, args.flow_idle), (7, 30));
        assert_eq!(args.retire_timeout, Duration::from_secs(600));
        assert_eq!(args.metrics_listen, Some("127.0.0.1:9651".parse().unwrap()));
        assert_eq!(socket, Path::new("/run/lb.sock"));
        assert_eq!(args.config.as_deref(), Some(Path::new(FILE)));
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let text = "iface = \"eth9\"\nstate_dir = \"/srv/file\"\nsocket = \"/run/file.sock\"\n\
                    flow_idle = 30\nempty_state = false\nxdp_mode = \"skb\"\n";
        let (args, socket) = merged(
            &[
                "--socket",
                "/run/cli.sock",
                "daemon",
                "--config",
                FILE,
                "--state-dir",
                "/srv/cli",
                "--empty-state",
                "--xdp-mode",
                "native",
            ],
            text,
        )
        .expect("merged");
        assert_eq!(args.state_dir, Path::new("/srv/cli"));
        assert_eq!(socket, Path::new("/run/cli.sock"));
        assert!(args.empty_state, "a flag given beats the file's false");
        assert!(matches!(args.xdp_mode, Some(XdpModeArg::Native)));
        assert_eq!(
            args.iface.as_deref(),
            Some("eth9"),
            "the file fills the rest"
        );
        assert_eq!(args.flow_idle, 30);
        // The global --socket also wins after the subcommand.
        let (_, socket) = merged(
            &["daemon", "--config", FILE, "--socket", "/run/late.sock"],
            text,
        )
        .expect("merged");
        assert_eq!(socket, Path::new("/run/late.sock"));
    }

    #[test]
    fn a_bad_value_is_refused_also_where_the_command_line_overrides_it() {
        let line = refusal(
            &["daemon", "--config", FILE, "--flow-idle", "30"],
            "iface = \"eth0\"\nflow_idle = -5\n",
        );
        assert!(line.starts_with(&format!("{FILE}: flow_idle: ")), "{line}");
        let line = refusal(
            &["daemon", "--config", FILE, "--flow-idle", "30"],
            "flow_idle = \"30\"\n",
        );
        assert_eq!(
            line,
            format!("{FILE}: flow_idle must be an integer, not string")
        );
    }

    #[test]
    fn without_a_file_the_command_line_is_all() {
        let argv: Vec<OsString> = ["balancer", "daemon", "--iface", "eth0"]
            .into_iter()
            .map(OsString::from)
            .collect();
        let (args, socket) =
            merge_with(&argv, |_| panic!("no file to read")).expect("a plain command line");
        assert_eq!(args.iface.as_deref(), Some("eth0"));
        assert_eq!(socket, Path::new(crate::cli::DEFAULT_SOCKET));
        assert_eq!(args.state_dir, Path::new("/var/lib/balancer"));
    }

    #[test]
    fn an_unknown_key_is_refused_naming_file_and_key() {
        let line = refusal(
            &["daemon", "--config", FILE],
            "iface = \"eth0\"\ncolour = 1\n",
        );
        assert!(
            line.starts_with(&format!("{FILE}: unknown key `colour`"))
                && line.contains("state_dir")
                && !line.contains('\n'),
            "{line}"
        );
        for not_a_key in [
            "config = \"/etc/other.toml\"",
            "timeout = \"5s\"",
            "state-dir = \"/x\"",
        ] {
            let line = refusal(&["daemon", "--config", FILE], not_a_key);
            assert!(line.contains("unknown key"), "{not_a_key}: {line}");
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused_naming_file_and_key() {
        for (text, expected) in [
            (
                "conntrack_size = \"65536\"",
                "conntrack_size must be an integer, not string",
            ),
            ("iface = 5", "iface must be a string, not integer"),
            (
                "empty_state = \"yes\"",
                "empty_state must be a boolean, not string",
            ),
            (
                "metrics_listen = [\"127.0.0.1:1\"]",
                "metrics_listen must be a string, not array",
            ),
            (
                "[iface]\nname = \"eth0\"",
                "iface must be a string, not table",
            ),
        ] {
            let line = refusal(&["daemon", "--config", FILE], text);
            assert_eq!(line, format!("{FILE}: {expected}"), "{text}");
        }
    }

    #[test]
    fn a_bad_value_is_refused_by_its_flags_parser_naming_the_key() {
        for (text, key, says) in [
            ("conntrack_size = 5", "conntrack_size", "1024..=16777216"),
            (
                "xdp_mode = \"fast\"",
                "xdp_mode",
                "'fast' for '--xdp-mode <XDP_MODE>' (one of: native, skb)",
            ),
            ("retire_timeout = \"soon\"", "retire_timeout", "soon"),
            (
                "metrics_listen = \"localhost\"",
                "metrics_listen",
                "localhost",
            ),
            ("hash_seed = -1", "hash_seed", "-1"),
        ] {
            let line = refusal(&["daemon", "--config", FILE], text);
            assert!(
                line.starts_with(&format!("{FILE}: {key}: ")) && line.contains(says),
                "{text}: {line}"
            );
        }
    }

    #[test]
    fn a_file_that_is_not_toml_or_missing_is_refused_in_one_line() {
        let line = refusal(
            &["daemon", "--config", FILE],
            "iface = \"eth0\"\nstate_dir = \n",
        );
        assert!(line.starts_with(&format!("{FILE}, line 2: ")), "{line}");
        let argv: Vec<OsString> = ["balancer", "daemon", "--config", "/nonexistent/daemon.toml"]
            .into_iter()
            .map(OsString::from)
            .collect();
        let line = crate::error::one_line(&merge(&argv).expect_err("no such file"));
        assert!(
            line.starts_with("cannot read the config file /nonexistent/daemon.toml: ")
                && line.contains("No such file"),
            "{line}"
        );
    }

    #[test]
    fn only_the_daemon_has_a_file() {
        let line = refusal(&["status"], "");
        assert_eq!(line, "the command line: not `balancer daemon`");
    }
}

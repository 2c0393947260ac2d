//! `clickup-bridge.toml` and `CLICKUP_BRIDGE_<KEY>` environment overrides,
//! read with the `config` crate. A missing settings file means defaults.
//!
//! Relative paths in the file resolve against the file's folder; paths given
//! through the environment or the command line resolve against the working
//! directory.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured on a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Where events and deliveries are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file (created when missing).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

/// The daemon's settings, defaults as SPEC section 2.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address of the webhook listener.
    pub listen: String,
    /// Address of the admin listener.
    pub admin_listen: String,
    /// Bearer token of the admin API.
    pub admin_token: Option<String>,
    /// Path of routes.yaml.
    pub routes: PathBuf,
    /// Templates folder.
    pub templates: PathBuf,
    /// The store.
    pub store: StoreLocation,
    /// Largest accepted request body in bytes.
    pub max_body: usize,
    /// Days delivered and dead history is kept.
    pub retention_days: u32,
    /// Log format; `None` picks pretty on a terminal, else JSON.
    pub log_format: Option<LogFormat>,
    /// Seconds to finish in-flight work on SIGTERM.
    pub shutdown_timeout: u64,
    /// Seconds a claim of a dead instance holds its work before other
    /// instances take it over (PostgreSQL store).
    pub lease_timeout: u64,
    /// Problems that did not stop loading (an unknown `CLICKUP_BRIDGE_*`
    /// variable), for the caller to show.
    pub warnings: Vec<String>,
    /// How the listeners protect themselves (deadlines, connection caps).
    pub http: HttpSettings,
}

/// Listener settings that bound what one sender can hold (`body_timeout`,
/// `max_connections`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// How long a sender may take to send a request's headers, and then its
    /// body; slower requests are answered 408 and closed.
    pub body_timeout: std::time::Duration,
    /// Connections the webhook listener holds at once; more wait in the
    /// kernel's backlog.
    pub max_connections: usize,
    /// `tls_cert` and `tls_key`: HTTPS on the webhook listener (and on the
    /// admin listener when it is not loopback).
    pub tls: Option<crate::tls::TlsFiles>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            body_timeout: std::time::Duration::from_secs(5),
            max_connections: 4096,
            tls: None,
        }
    }
}

/// A settings problem.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file or an environment variable does not parse.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file path, or "environment".
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The named settings file does not exist.
    #[error("settings file {0} does not exist")]
    Missing(PathBuf),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<String>,
    admin_listen: Option<String>,
    admin_token: Option<String>,
    routes: Option<String>,
    templates: Option<String>,
    store: Option<String>,
    max_body: Option<u64>,
    retention_days: Option<u32>,
    log_format: Option<LogFormat>,
    shutdown_timeout: Option<u64>,
    body_timeout: Option<u64>,
    max_connections: Option<u64>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    lease_timeout: Option<u64>,
}

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "CLICKUP_BRIDGE";

fn invalid(origin: &str, e: config::ConfigError) -> SettingsError {
    SettingsError::Invalid {
        origin: origin.to_owned(),
        message: e.to_string(),
    }
}

fn read_file(path: &Path) -> Result<Raw, SettingsError> {
    let origin = path.display().to_string();
    config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Raw>())
        .map_err(|e| invalid(&origin, e))
}

/// Every settings key, as `CLICKUP_BRIDGE_<KEY>` reads it.
pub const KEYS: &[&str] = &[
    "listen",
    "admin_listen",
    "admin_token",
    "routes",
    "templates",
    "store",
    "max_body",
    "retention_days",
    "log_format",
    "shutdown_timeout",
    "body_timeout",
    "max_connections",
    "tls_cert",
    "tls_key",
    "lease_timeout",
];

/// Splits `CLICKUP_BRIDGE_*` variables into settings and warnings. A
/// variable that is not a setting (`CLICKUP_BRIDGE_BIN` from a user's own
/// script) must not stop the daemon, but a typo of a setting must not go
/// unnoticed either: it is named, with the setting it most resembles.
fn settings_vars(vars: Vec<(String, String)>) -> (config::Map<String, String>, Vec<String>) {
    let prefix = format!("{ENV_PREFIX}_");
    let mut map = config::Map::new();
    let mut warnings = Vec::new();
    for (k, v) in vars {
        let Some(key) = k.strip_prefix(&prefix) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if KEYS.contains(&key.as_str()) {
            map.insert(k, v);
            continue;
        }
        let nearest = KEYS
            .iter()
            .map(|known| (strsim::levenshtein(known, &key), *known))
            .min()
            .filter(|(d, known)| *d <= 2.max(known.len() / 4));
        warnings.push(match nearest {
            Some((_, known)) => format!(
                "environment variable {k} is not a setting and is ignored; did you mean {prefix}{}?",
                known.to_ascii_uppercase()
            ),
            None => format!(
                "environment variable {k} is not a setting and is ignored (settings: {})",
                KEYS.join(", ")
            ),
        });
    }
    (map, warnings)
}

fn read_env(map: config::Map<String, String>) -> Result<Raw, SettingsError> {
    config::Config::builder()
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                // No try_parsing: a token such as 0012345 must stay text;
                // numeric keys are converted from text when deserialized.
                .source(Some(map)),
        )
        .build()
        .and_then(|c| c.try_deserialize::<Raw>())
        .map_err(|e| invalid("environment", e))
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn store_location(url: &str, base: &Path) -> Result<StoreLocation, SettingsError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(SettingsError::Invalid {
                origin: "store".into(),
                message: "sqlite:// needs a file path, e.g. sqlite://clickup-bridge.db".into(),
            });
        }
        Ok(StoreLocation::Sqlite(resolve(base, path)))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(StoreLocation::Postgres(url.to_owned()))
    } else {
        Err(SettingsError::Invalid {
            origin: "store".into(),
            message: "store must be sqlite://PATH or postgres://...".into(),
        })
    }
}

impl StoreLocation {
    /// Parses a store URL (`sqlite://PATH`, `postgres://...`); a relative
    /// SQLite path resolves against `base`.
    pub fn parse(url: &str, base: &Path) -> Result<StoreLocation, SettingsError> {
        store_location(url, base)
    }

    /// Where the store is, for the log: the absolute SQLite path, or the
    /// PostgreSQL URL without its password.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => format!("sqlite://{}", path.display()),
            StoreLocation::Postgres(url) => match reqwest::Url::parse(url) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("***"));
                    }
                    u.set_query(None);
                    u.to_string()
                }
                Err(_) => "postgres://(unparsable URL)".to_owned(),
            },
        }
    }
}

impl Settings {
    /// Loads settings: defaults, then the file (if any), then `vars` (the
    /// process environment in production). `file` is the `-c` argument;
    /// without it `clickup-bridge.toml` in the working directory is used when
    /// present. `cwd` is the base for paths not given in the file.
    pub fn load(
        file: Option<&Path>,
        vars: Vec<(String, String)>,
        cwd: &Path,
    ) -> Result<Settings, SettingsError> {
        let (file_raw, file_dir) = match file {
            Some(f) => {
                if !f.exists() {
                    return Err(SettingsError::Missing(f.to_path_buf()));
                }
                let dir = resolve(cwd, &f.display().to_string())
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| cwd.to_path_buf());
                (read_file(f)?, dir)
            }
            None => {
                let default = cwd.join("clickup-bridge.toml");
                if default.exists() {
                    (read_file(&default)?, cwd.to_path_buf())
                } else {
                    (Raw::default(), cwd.to_path_buf())
                }
            }
        };
        let (env_vars, warnings) = settings_vars(vars);
        let env_raw = read_env(env_vars)?;
        // A value from the environment wins and resolves against the working
        // directory; a value from the file resolves against the file's folder.
        let path_of = |env: &Option<String>, file: &Option<String>, default: &str| match (env, file)
        {
            (Some(e), _) => resolve(cwd, e),
            (None, Some(f)) => resolve(&file_dir, f),
            (None, None) => resolve(&file_dir, default),
        };
        let file_or_env = |env: &Option<String>, file: &Option<String>| match (env, file) {
            (Some(e), _) if !e.is_empty() => Some(resolve(cwd, e)),
            (_, Some(f)) if !f.is_empty() => Some(resolve(&file_dir, f)),
            _ => None,
        };
        let tls = match (
            file_or_env(&env_raw.tls_cert, &file_raw.tls_cert),
            file_or_env(&env_raw.tls_key, &file_raw.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(SettingsError::Invalid {
                    origin: "tls_cert".into(),
                    message: "tls_cert and tls_key go together: set both for HTTPS, or neither"
                        .into(),
                });
            }
        };
        let store = match (&env_raw.store, &file_raw.store) {
            (Some(e), _) => store_location(e, cwd)?,
            (None, Some(f)) => store_location(f, &file_dir)?,
            (None, None) => store_location("sqlite://clickup-bridge.db", &file_dir)?,
        };
        let max_body = env_raw.max_body.or(file_raw.max_body).unwrap_or(1_048_576);
        let admin_token = env_raw.admin_token.or(file_raw.admin_token);
        if admin_token
            .as_deref()
            .is_some_and(|t| !t.is_empty() && t.trim().is_empty())
        {
            return Err(SettingsError::Invalid {
                origin: "admin_token".into(),
                message: "it is only whitespace, which protects nothing; set a real token or \
                          leave the setting out"
                    .into(),
            });
        }
        let defaults = HttpSettings::default();
        let body_timeout = match env_raw.body_timeout.or(file_raw.body_timeout) {
            Some(0) => {
                return Err(SettingsError::Invalid {
                    origin: "body_timeout".into(),
                    message: "body_timeout must be at least 1 second (default 5)".into(),
                });
            }
            Some(n) => std::time::Duration::from_secs(n),
            None => defaults.body_timeout,
        };
        let max_connections = match env_raw.max_connections.or(file_raw.max_connections) {
            Some(0) => {
                return Err(SettingsError::Invalid {
                    origin: "max_connections".into(),
                    message: "max_connections must be at least 1 (default 4096)".into(),
                });
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => defaults.max_connections,
        };
        Ok(Settings {
            listen: env_raw
                .listen
                .or(file_raw.listen)
                .unwrap_or_else(|| "0.0.0.0:8080".into()),
            admin_listen: env_raw
                .admin_listen
                .or(file_raw.admin_listen)
                .unwrap_or_else(|| "127.0.0.1:9090".into()),
            admin_token: admin_token.filter(|t| !t.is_empty()),
            routes: path_of(&env_raw.routes, &file_raw.routes, "routes.yaml"),
            templates: path_of(&env_raw.templates, &file_raw.templates, "templates"),
            store,
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            retention_days: env_raw
                .retention_days
                .or(file_raw.retention_days)
                .unwrap_or(7),
            log_format: env_raw.log_format.or(file_raw.log_format),
            shutdown_timeout: env_raw
                .shutdown_timeout
                .or(file_raw.shutdown_timeout)
                .unwrap_or(30),
            lease_timeout: env_raw
                .lease_timeout
                .or(file_raw.lease_timeout)
                .unwrap_or(60)
                .max(1),
            warnings,
            http: HttpSettings {
                body_timeout,
                max_connections,
                tls,
            },
        })
    }

    /// Loads from the process environment and working directory.
    pub fn from_process(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let cwd = std::env::current_dir().map_err(|e| SettingsError::Invalid {
            origin: "working directory".into(),
            message: e.to_string(),
        })?;
        Settings::load(file, std::env::vars().collect(), &cwd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_without_a_file() {
        let s = Settings::load(None, vec![], Path::new("/srv")).unwrap();
        assert_eq!(s.listen, "0.0.0.0:8080");
        assert_eq!(s.admin_listen, "127.0.0.1:9090");
        assert_eq!(s.admin_token, None);
        assert_eq!(s.routes, Path::new("/srv/routes.yaml"));
        assert_eq!(s.templates, Path::new("/srv/templates"));
        assert_eq!(
            s.store,
            StoreLocation::Sqlite("/srv/clickup-bridge.db".into())
        );
        assert_eq!(s.max_body, 1_048_576);
        assert_eq!(s.retention_days, 7);
        assert_eq!(s.shutdown_timeout, 30);
    }

    #[test]
    fn file_paths_resolve_against_the_file_and_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let file = etc.join("clickup-bridge.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\nroutes = \"r.yaml\"\nstore = \"sqlite://data/x.db\"\nmax_body = 10\n",
        )
        .unwrap();
        let env = vec![
            ("CLICKUP_BRIDGE_MAX_BODY".to_owned(), "20".to_owned()),
            ("CLICKUP_BRIDGE_ADMIN_TOKEN".to_owned(), "t0k".to_owned()),
            ("CLICKUP_BRIDGE_TEMPLATES".to_owned(), "tpl".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let s = Settings::load(Some(&file), env, Path::new("/work")).unwrap();
        assert_eq!(s.listen, "127.0.0.1:1");
        assert_eq!(s.routes, etc.join("r.yaml"));
        assert_eq!(s.store, StoreLocation::Sqlite(etc.join("data/x.db")));
        assert_eq!(s.max_body, 20);
        assert_eq!(s.admin_token.as_deref(), Some("t0k"));
        assert_eq!(s.templates, Path::new("/work/tpl"));
    }

    #[test]
    fn values_that_look_like_numbers_stay_text_where_text_is_expected() {
        let env = vec![
            (
                "CLICKUP_BRIDGE_ADMIN_TOKEN".to_owned(),
                "0012345".to_owned(),
            ),
            ("CLICKUP_BRIDGE_LOG_FORMAT".to_owned(), "json".to_owned()),
            ("CLICKUP_BRIDGE_RETENTION_DAYS".to_owned(), "30".to_owned()),
        ];
        let s = Settings::load(None, env, Path::new("/srv")).unwrap();
        assert_eq!(s.admin_token.as_deref(), Some("0012345"));
        assert_eq!(s.log_format, Some(LogFormat::Json));
        assert_eq!(s.retention_days, 30);
    }

    #[test]
    fn lease_timeout_defaults_to_60_and_reads_the_environment() {
        let s = Settings::load(None, vec![], Path::new("/srv")).unwrap();
        assert_eq!(s.lease_timeout, 60);
        let env = vec![
            ("CLICKUP_BRIDGE_LEASE_TIMEOUT".to_owned(), "5".to_owned()),
            (
                "CLICKUP_BRIDGE_STORE".to_owned(),
                "postgresql://u@db/x".to_owned(),
            ),
        ];
        let s = Settings::load(None, env, Path::new("/srv")).unwrap();
        assert_eq!(s.lease_timeout, 5);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(
            s.store,
            StoreLocation::Postgres("postgresql://u@db/x".into())
        );
    }

    #[test]
    fn absolute_sqlite_paths_and_bad_settings() {
        let env = vec![(
            "CLICKUP_BRIDGE_STORE".to_owned(),
            "sqlite:///var/lib/x.db".to_owned(),
        )];
        let s = Settings::load(None, env, Path::new("/srv")).unwrap();
        assert_eq!(s.store, StoreLocation::Sqlite("/var/lib/x.db".into()));
        let env = vec![("CLICKUP_BRIDGE_STORE".to_owned(), "mysql://x".to_owned())];
        assert!(Settings::load(None, env, Path::new("/srv")).is_err());
        assert!(Settings::load(Some(Path::new("/nope.toml")), vec![], Path::new("/")).is_err());
    }

    /// A variable of someone else's (CLICKUP_BRIDGE_BIN from a user's
    /// script) must not stop the daemon; a typo of a setting is named with
    /// the setting it resembles; both are warnings and change nothing.
    #[test]
    fn unknown_environment_variables_warn_and_name_the_nearest_setting() {
        let env = vec![
            ("CLICKUP_BRIDGE_LISTN".to_owned(), "127.0.0.1:1".to_owned()),
            ("CLICKUP_BRIDGE_BIN".to_owned(), "/usr/bin/x".to_owned()),
            ("CLICKUP_BRIDGE_MAX_BODY".to_owned(), "10".to_owned()),
        ];
        let s = Settings::load(None, env, Path::new("/srv")).unwrap();
        assert_eq!(s.listen, "0.0.0.0:8080");
        assert_eq!(s.max_body, 10);
        assert_eq!(
            s.warnings,
            [
                "environment variable CLICKUP_BRIDGE_LISTN is not a setting and is ignored; did you mean CLICKUP_BRIDGE_LISTEN?",
                "environment variable CLICKUP_BRIDGE_BIN is not a setting and is ignored (settings: listen, admin_listen, admin_token, routes, templates, store, max_body, retention_days, log_format, shutdown_timeout, body_timeout, max_connections, tls_cert, tls_key, lease_timeout)",
            ]
        );
    }

    /// The startup log names the store: the absolute SQLite path, or the
    /// PostgreSQL host and database without the password.
    #[test]
    fn the_store_is_described_without_its_password() {
        let s = Settings::load(None, vec![], Path::new("/srv")).unwrap();
        assert_eq!(s.store.describe(), "sqlite:///srv/clickup-bridge.db");
        let pg = StoreLocation::Postgres(
            "postgres://bridge:s3cr3t@db.internal:5432/bridge?sslmode=require".into(),
        );
        assert_eq!(
            pg.describe(),
            "postgres://bridge:***@db.internal:5432/bridge"
        );
    }

    #[test]
    fn a_file_with_an_unknown_key_is_still_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "listn = \"x\"\n").unwrap();
        let e = Settings::load(Some(&f), vec![], dir.path()).unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
    }
}

//! `sources:`: who may POST to `/hooks/{name}` and how they are verified.

use super::reader::{self, MapReader};
use crate::routes_file::diag::Diagnostics;
use crate::routes_file::yaml::{Node, Pos};
use crate::transform::jsonpath::JsonPath;
use crate::verify::{Encoding, IdentityRule, Scheme, Secret, Verifier};
use std::collections::BTreeMap;

/// Polling of ClickUp's webhook health for a team (SPEC section 3, `watch:`).
#[derive(Debug, Clone)]
pub struct Watch {
    /// The ClickUp team (workspace) id.
    pub team_id: String,
    /// The clickup target whose token is used.
    pub via: String,
    /// Whether a suspended webhook is set back to active.
    pub auto_reactivate: bool,
    /// Time between polls (`interval`, seconds; default 60).
    pub interval: std::time::Duration,
}

/// A compiled source.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its name, the `{source}` of `/hooks/{source}`.
    pub name: String,
    /// Signature scheme and secrets.
    pub verifier: Verifier,
    /// How its events get a type and a dedupe id.
    pub identity: IdentityRule,
    /// Optional webhook health watch (clickup sources).
    pub watch: Option<Watch>,
    /// Where it is defined, for later diagnostics.
    pub pos: Pos,
}

impl Source {
    /// The `verify:` kind, as written.
    pub fn kind(&self) -> &'static str {
        match self.verifier.scheme {
            Scheme::ClickUp => "clickup",
            Scheme::Stripe { .. } => "stripe",
            Scheme::Hmac { .. } => "hmac",
        }
    }
}

const KINDS: &[&str] = &["clickup", "stripe", "hmac"];

/// Compiles the `sources:` mapping.
pub fn compile(node: Option<&Node>, d: &mut Diagnostics) -> BTreeMap<String, Source> {
    let mut out = BTreeMap::new();
    let Some(node) = node else {
        return out;
    };
    for (name, key, value) in reader::entries(node, "sources", d) {
        if !reader::check_name(name, key.pos, "source name", d) {
            continue;
        }
        if let Some(s) = compile_one(name, value, d) {
            out.insert(name.to_owned(), s);
        }
    }
    out
}

fn secrets(node: &Node, d: &mut Diagnostics) -> Vec<Secret> {
    let list = reader::string_or_list(node, "secret", d);
    let mut out = Vec::new();
    for (s, pos) in list {
        if s.is_empty() {
            d.error(
                pos,
                "secret is empty: set it to the webhook's signing secret",
            );
        } else {
            out.push(Secret::new(s));
        }
    }
    out
}

fn compile_one(name: &str, node: &Node, d: &mut Diagnostics) -> Option<Source> {
    let mut r = MapReader::new(node, &format!("source \"{name}\""), d)?;
    let kind_node = r.require("verify", d);
    let secret_node = r.require("secret", d);
    let secrets = secret_node.map(|n| secrets(n, d)).unwrap_or_default();
    let kind = kind_node.and_then(|n| reader::string(n, "verify", d).map(|s| (s, n.pos)));
    let mut source = None;
    match kind.as_ref().map(|(k, p)| (k.as_str(), *p)) {
        Some(("clickup", _)) => {
            let watch = r.take("watch").and_then(|w| compile_watch(w, d));
            source = Some((Scheme::ClickUp, IdentityRule::ClickUp, watch));
        }
        Some(("stripe", _)) => {
            let tolerance = r
                .take("tolerance")
                .and_then(|n| reader::whole(n, "tolerance", 1, d))
                .unwrap_or(300);
            source = Some((
                Scheme::Stripe {
                    tolerance_secs: tolerance,
                },
                IdentityRule::Stripe,
                None,
            ));
        }
        Some(("hmac", _)) => {
            let header = r
                .require("header", d)
                .and_then(|n| reader::string(n, "header", d));
            let prefix = r
                .take("prefix")
                .and_then(|n| reader::string(n, "prefix", d))
                .unwrap_or_default();
            let encoding = match r.take("encoding") {
                None => Some(Encoding::Hex),
                Some(n) => match reader::string(n, "encoding", d).as_deref() {
                    Some("hex") => Some(Encoding::Hex),
                    Some("base64") => Some(Encoding::Base64),
                    Some(other) => {
                        d.error(
                            n.pos,
                            format!("unknown encoding \"{other}\"; use hex or base64"),
                        );
                        None
                    }
                    None => None,
                },
            };
            let event = r.take("event").and_then(|n| path(n, d));
            let id = r.take("id").and_then(|n| path(n, d));
            if let (Some(header), Some(encoding)) = (header, encoding) {
                source = Some((
                    Scheme::Hmac {
                        header,
                        prefix,
                        encoding,
                    },
                    IdentityRule::Generic { event, id },
                    None,
                ));
            }
        }
        Some((other, pos)) => {
            let hint = crate::routes_file::diag::suggestion(other, KINDS, "kinds");
            d.error(
                pos,
                format!("unknown verify kind \"{other}\"{hint} (clickup, stripe or hmac)"),
            );
        }
        None => {}
    }
    r.finish(d);
    let (scheme, identity, watch) = source?;
    if secrets.is_empty() {
        return None;
    }
    Some(Source {
        name: name.to_owned(),
        verifier: Verifier { scheme, secrets },
        identity,
        watch,
        pos: node.pos,
    })
}

/// Compiles a JSONPath node, recording a diagnostic when it does not parse.
pub fn path(node: &Node, d: &mut Diagnostics) -> Option<JsonPath> {
    let text = reader::string(node, "a JSONPath", d)?;
    match JsonPath::compile(&text) {
        Ok(p) => Some(p),
        Err(e) => {
            d.error(node.pos, e.to_string());
            None
        }
    }
}

fn compile_watch(node: &Node, d: &mut Diagnostics) -> Option<Watch> {
    let mut r = MapReader::new(node, "watch", d)?;
    let team_id = r
        .require("team_id", d)
        .and_then(|n| reader::string(n, "team_id", d));
    let via = r
        .require("via", d)
        .and_then(|n| reader::string(n, "via", d));
    let auto_reactivate = r
        .take("auto_reactivate")
        .and_then(|n| reader::boolean(n, "auto_reactivate", d))
        .unwrap_or(false);
    let interval = r
        .take("interval")
        .and_then(|n| reader::number(n, "interval", d))
        .map(|s| std::time::Duration::from_secs_f64(s.max(1.0)))
        .unwrap_or(std::time::Duration::from_secs(60));
    r.finish(d);
    Some(Watch {
        team_id: team_id?,
        via: via?,
        auto_reactivate,
        interval,
    })
}

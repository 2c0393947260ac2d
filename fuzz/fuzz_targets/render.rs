//! Rendering: any template that compiles renders any JSON payload to text
//! or a render error, within its limits; never a panic or a stack overflow.
#![no_main]
use clickup_bridge::transform::render::{Kind, MAX_RENDER_BYTES, Templates};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, String, Vec<u8>)| {
    let (kind, template, payload) = input;
    let kind = match kind % 4 {
        0 => Kind::Plain,
        1 => Kind::Typed,
        2 => Kind::JsonFile,
        _ => Kind::UrlPath,
    };
    let mut t = Templates::new();
    let Ok(id) = t.add("t", &template, kind) else {
        return;
    };
    let value: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
    let Ok(ctx) = handlebars::Context::wraps(value) else {
        return;
    };
    if let Ok(text) = t.render_text(&id, &ctx) {
        assert!(text.len() <= MAX_RENDER_BYTES);
    }
    let _ = t.render_value(&id, &ctx);
});

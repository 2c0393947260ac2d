//! routes.yaml loading and compiling: any text compiles or yields
//! diagnostics, never a panic.
#![no_main]
use clickup_bridge::pipeline::Pipeline;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let env = |name: &str| (name == "SECRET").then(|| "s3cret".to_owned());
    let _ = Pipeline::compile(
        "routes.yaml",
        text,
        std::path::Path::new("/nonexistent-templates"),
        &env,
    );
});

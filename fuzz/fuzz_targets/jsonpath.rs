//! JSONPath: any expression compiles or is refused, and a compiled one
//! selects from any JSON document without a panic.
#![no_main]
use clickup_bridge::transform::jsonpath::JsonPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, Vec<u8>)| {
    let (path, doc) = input;
    let Ok(p) = JsonPath::compile(&path) else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&doc) else {
        return;
    };
    let all = p.select(&value);
    assert_eq!(p.first(&value).is_some(), !all.is_empty());
});

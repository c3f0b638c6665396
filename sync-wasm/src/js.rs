//! Small helpers over JavaScript values, bound by hand through `js_sys` (`Reflect`, `JSON`):
//! a few calls by name cost less code than typed web-sys bindings.

use js_sys::{Reflect, JSON};
use wasm_bindgen::prelude::*;

/// `target[key]`, or `undefined` when `target` is not an object.
pub fn get(target: &JsValue, key: &str) -> JsValue {
    if !target.is_object() && !target.is_function() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(target, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// `target[key] = value`.
pub fn set(target: &JsValue, key: &str, value: &JsValue) {
    let _ = Reflect::set(target, &JsValue::from_str(key), value);
}

/// A fresh `{}`.
pub fn object() -> JsValue {
    js_sys::Object::new().into()
}

/// `JSON.parse(text)`, or `undefined` for text that is not JSON.
pub fn parse_json(text: &str) -> JsValue {
    JSON::parse(text).unwrap_or(JsValue::UNDEFINED)
}

/// `JSON.stringify(value)`, or `None` for what has no JSON form (`undefined`, a function) or
/// throws (a cycle, a `BigInt`).
pub fn to_json(value: &JsValue) -> Option<String> {
    JSON::stringify(value).ok()?.as_string()
}

/// `n` in decimal, without the formatting machinery.
pub fn decimal(n: u64) -> String {
    let mut out = String::new();
    sync_core::object::write_decimal(&mut out, n);
    out
}

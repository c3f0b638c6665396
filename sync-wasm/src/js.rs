//! Small helpers over JavaScript values, and the host APIs the client uses.
//!
//! Host APIs (timers, Web Locks, BroadcastChannel, the page's visibility) are looked up on the
//! global object when they are used, so that the same wasm runs in a browser tab, a worker and
//! Node, and simply goes without what a host lacks (Node has no `navigator.locks`). That is
//! also why this file binds them by hand instead of through web-sys: a handful of calls by
//! name cost less code than the typed bindings.

use js_sys::{Array, Function, Promise, Reflect, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    pub fn set_timeout(callback: &Function, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    pub fn clear_timeout(handle: &JsValue);
}

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

/// `globalThis`.
pub fn global() -> JsValue {
    js_sys::global().into()
}

/// `target[name](...args)`; an error if it is not a function or if it throws.
pub fn call(target: &JsValue, name: &str, args: &[&JsValue]) -> Result<JsValue, JsValue> {
    let method = get(target, name);
    let Some(method) = method.dyn_ref::<Function>() else {
        return Err(type_error(name));
    };
    let list = Array::new();
    for arg in args {
        list.push(arg);
    }
    method.apply(target, &list)
}

/// Awaits `value` if it is a promise (or any thenable); a plain value is returned as it is.
pub async fn settle(value: JsValue) -> Result<JsValue, JsValue> {
    JsFuture::from(Promise::resolve(&value)).await
}

/// A `TypeError` naming what is missing or wrong.
pub fn type_error(what: &str) -> JsValue {
    let mut message = String::from("tidemark: ");
    message.push_str(what);
    message.push_str(" is missing or not valid");
    js_sys::TypeError::new(&message).into()
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

/// Milliseconds since the epoch.
pub fn now() -> f64 {
    js_sys::Date::now()
}

/// `n` in decimal, without the formatting machinery.
pub fn decimal(mut n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[at..].iter().map(|&d| char::from(d)).collect()
}

/// `encodeURIComponent(part)`.
pub fn encode(part: &str) -> String {
    js_sys::encode_uri_component(part).into()
}

/// A fresh random id: `crypto.randomUUID()` where the host has it, random hex otherwise.
pub fn random_id() -> String {
    let crypto = get(&global(), "crypto");
    if let Some(id) = call(&crypto, "randomUUID", &[])
        .ok()
        .and_then(|id| id.as_string())
    {
        return id;
    }
    let mut id = String::new();
    for _ in 0..4 {
        let word = (js_sys::Math::random() * 4_294_967_296.0) as u32;
        for shift in (0..32).step_by(4).rev() {
            let nibble = (word >> shift) & 0xf;
            id.push(char::from_digit(nibble, 16).unwrap_or('0'));
        }
    }
    id
}

/// Whether the page is hidden (a background tab); never, where there is no page.
pub fn page_hidden() -> bool {
    let document = get(&global(), "document");
    get(&document, "visibilityState").as_string().as_deref() == Some("hidden")
}

/// `navigator.locks`, where the host has the Web Locks API.
pub fn web_locks() -> Option<JsValue> {
    let locks = get(&get(&global(), "navigator"), "locks");
    get(&locks, "request").is_function().then_some(locks)
}

/// `new BroadcastChannel(name)`, where the host has it.
pub fn broadcast_channel(name: &str) -> Option<JsValue> {
    let constructor = get(&global(), "BroadcastChannel");
    let constructor = constructor.dyn_ref::<Function>()?;
    Reflect::construct(constructor, &Array::of1(&JsValue::from_str(name))).ok()
}

/// A listener added with `addEventListener`, removed by [`Listener::remove`].
pub struct Listener {
    target: JsValue,
    event: &'static str,
    callback: Closure<dyn FnMut(JsValue)>,
}

impl Listener {
    /// Adds `callback` for `event` on `target`; `None` if the target has no such method.
    pub fn add(
        target: JsValue,
        event: &'static str,
        callback: Closure<dyn FnMut(JsValue)>,
    ) -> Option<Listener> {
        let event_name = JsValue::from_str(event);
        call(
            &target,
            "addEventListener",
            &[&event_name, callback.as_ref()],
        )
        .ok()?;
        Some(Listener {
            target,
            event,
            callback,
        })
    }

    /// Removes the listener; the closure is freed with it.
    pub fn remove(self) {
        let event_name = JsValue::from_str(self.event);
        let _ = call(
            &self.target,
            "removeEventListener",
            &[&event_name, self.callback.as_ref()],
        );
    }
}

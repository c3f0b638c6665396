//! The SDK in headless Chromium, with `IndexedDbStore`, against a real sync-server: the
//! scenarios of `tests/scenarios.js` (which also run in Node). `scripts/test-sdk.sh` starts
//! the server and passes its URL and tokens in `TIDEMARK_TEST_ENV` at build time.
#![cfg(target_arch = "wasm32")]

use js_sys::{Promise, Reflect, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen(module = "/npm/stores.js")]
extern "C" {
    type IndexedDbStore;
    #[wasm_bindgen(static_method_of = IndexedDbStore)]
    fn open(name: &str) -> Promise;
}

#[wasm_bindgen(module = "/npm/client.js")]
extern "C" {
    /// The package's `SyncClient` class, built over the core given.
    #[wasm_bindgen(js_name = makeSyncClient)]
    fn make_sync_client(core: &JsValue) -> JsValue;
}

/// The scenarios, as the JavaScript module exports them.
mod scenarios {
    use wasm_bindgen::prelude::*;

    macro_rules! import {
        ($($name:ident = $js:literal;)*) => {
            #[wasm_bindgen(module = "/tests/scenarios.js")]
            extern "C" {
                $(
                    #[wasm_bindgen(catch, js_name = $js)]
                    pub async fn $name(ctx: &JsValue) -> Result<JsValue, JsValue>;
                )*
            }
        };
    }

    import! {
        push_pull_and_paging = "pushPullAndPaging";
        conflict_on_the_collection_is_rebased = "conflictOnTheCollectionIsRebased";
        conflict_on_an_object_server_wins_by_default = "conflictOnAnObjectServerWinsByDefault";
        conflict_on_an_object_is_merged = "conflictOnAnObjectIsMerged";
        conflict_in_a_pulled_page_local_wins = "conflictInAPulledPageLocalWins";
        tombstones_travel = "tombstonesTravel";
        reset_after_a_server_side_delete = "resetAfterAServerSideDelete";
        unauthorized_then_token_refresh = "unauthorizedThenTokenRefresh";
        lost_answer_is_resent_with_the_same_push_id = "lostAnswerIsResentWithTheSamePushId";
        resumes_from_the_stored_cursor = "resumesFromTheStoredCursor";
        scheduler_syncs_on_start_and_after_changes = "schedulerSyncsOnStartAndAfterChanges";
        tabs_take_turns_and_hear_each_other = "tabsTakeTurnsAndHearEachOther";
        store_api_and_transactions = "storeApiAndTransactions";
        live_mode_syncs_when_another_device_writes = "liveModeSyncsWhenAnotherDeviceWrites";
        blobs_upload_and_verified_fetch = "blobsUploadAndVerifiedFetch";
    }
}

/// The wasm core as the package's entry modules hand it to `makeSyncClient`: the exports of
/// this crate, which the test binary links in (it has no wasm-bindgen module of its own to
/// import them from).
fn core() -> JsValue {
    let core = js_sys::Object::new();
    let set = |key: &str, value: JsValue| {
        Reflect::set(&core, &JsValue::from_str(key), &value).unwrap();
    };
    set(
        "checkOptions",
        Closure::<dyn Fn(JsValue, JsValue, JsValue, JsValue) -> Option<String>>::new(
            sync_wasm::check_options,
        )
        .into_js_value(),
    );
    set(
        "openReplica",
        Closure::<dyn Fn(JsValue, String, JsValue, JsValue) -> Result<JsValue, JsValue>>::new(
            |state, client_id, config, pending| {
                sync_wasm::open_replica(state, client_id, config, pending).map(JsValue::from)
            },
        )
        .into_js_value(),
    );
    set(
        "newScheduler",
        Closure::<dyn Fn() -> JsValue>::new(|| JsValue::from(sync_wasm::new_scheduler()))
            .into_js_value(),
    );
    core.into()
}

/// `{env, makeClient, makeStore}` for a scenario.
fn context() -> JsValue {
    // Read at build time: the test binary runs in the browser, which has no environment.
    let Some(env) = option_env!("TIDEMARK_TEST_ENV") else {
        panic!("TIDEMARK_TEST_ENV is not set: run scripts/test-sdk.sh");
    };
    let ctx = js_sys::Object::new();
    let set = |key: &str, value: &JsValue| {
        Reflect::set(&ctx, &JsValue::from_str(key), value).unwrap();
    };
    set("env", &JSON::parse(env).expect("TIDEMARK_TEST_ENV is JSON"));
    let sync_client = make_sync_client(&core()).unchecked_into::<js_sys::Function>();
    let make_client =
        Closure::<dyn Fn(JsValue) -> Result<JsValue, JsValue>>::new(move |options: JsValue| {
            Reflect::construct(&sync_client, &js_sys::Array::of1(&options))
        });
    set("makeClient", &make_client.into_js_value());
    let make_store =
        Closure::<dyn Fn(String) -> Promise>::new(|name: String| IndexedDbStore::open(&name));
    set("makeStore", &make_store.into_js_value());
    ctx.into()
}

/// Runs a scenario; a failure panics with the JavaScript error's message.
async fn run(result: impl std::future::Future<Output = Result<JsValue, JsValue>>) {
    if let Err(error) = result.await {
        let message = Reflect::get(&error, &JsValue::from_str("message"))
            .ok()
            .and_then(|m| m.as_string())
            .unwrap_or_else(|| format!("{error:?}"));
        panic!("{message}");
    }
}

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[wasm_bindgen_test]
            async fn $name() {
                run(scenarios::$name(&context())).await;
            }
        )*
    };
}

tests!(
    push_pull_and_paging,
    conflict_on_the_collection_is_rebased,
    conflict_on_an_object_server_wins_by_default,
    conflict_on_an_object_is_merged,
    conflict_in_a_pulled_page_local_wins,
    tombstones_travel,
    reset_after_a_server_side_delete,
    unauthorized_then_token_refresh,
    lost_answer_is_resent_with_the_same_push_id,
    resumes_from_the_stored_cursor,
    scheduler_syncs_on_start_and_after_changes,
    tabs_take_turns_and_hear_each_other,
    store_api_and_transactions,
    live_mode_syncs_when_another_device_writes,
    blobs_upload_and_verified_fetch,
);

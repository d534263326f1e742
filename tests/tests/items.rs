//! The REST API over items and orders: reads come from the projection,
//! writes go through the document and reach live clients.

use std::time::Duration;

use larder_client::SyncClient;
use larder_tests::*;
use serde_json::{Value, json};
use uuid::Uuid;

fn fast_projection(c: &mut larder_server::Config) {
    c.projector.projection_debounce_ms = 20;
    c.projector.projection_max_delay_ms = 200;
}

struct Fixture {
    app: TestApp,
    owner: Account,
    family: Uuid,
    list: Uuid,
    token: String,
}

async fn fixture(db: &TestDatabase) -> Fixture {
    let app = TestApp::spawn_with(db.url(), fast_projection).await;
    let owner = app.signup("owner").await;
    let family = app.create_family(&owner, "Smiths").await;
    let list = app.create_list(&owner, family, "Weekly").await;
    let token = owner.access_token.clone();
    Fixture {
        app,
        owner,
        family,
        list,
        token,
    }
}

impl Fixture {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.app.call(method, path, Some(&self.token), body).await
    }

    async fn client(&self) -> SyncClient {
        let mut client = SyncClient::new();
        client
            .connect(&self.app.sync_url_with(self.list, Some(&self.token)))
            .await
            .expect("connect");
        wait_synced(&client).await;
        client
    }

    async fn item_names(&self, query: &str) -> Vec<String> {
        let (status, body) = self
            .call("GET", &format!("/v1/lists/{}{query}", self.list), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["name"].as_str().expect("name").to_owned())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_item_writes_reach_live_clients_and_client_edits_reach_rest_reads() {
    let db = TestDatabase::create().await;
    let f = fixture(&db).await;
    let client = f.client().await;

    // REST -> live document.
    let (status, milk) = f
        .call(
            "POST",
            &format!("/v1/lists/{}/items", f.list),
            Some(json!({"name": "Milk", "quantity": "2 l", "category": "dairy"})),
        )
        .await;
    assert_eq!(status, 201, "{milk}");
    let milk_id = milk["id"].as_str().expect("id").to_owned();
    eventually(
        "the client sees the REST item",
        Duration::from_secs(10),
        || async {
            client
                .snapshot()
                .items
                .iter()
                .any(|i| i.id == milk_id && i.name == "Milk")
        },
    )
    .await;

    // Live document -> REST reads (through the projection).
    add_item(&client, "Bread");
    eventually(
        "the REST read sees the client's item",
        Duration::from_secs(10),
        || async {
            let names = f.item_names("").await;
            names.contains(&"Bread".to_owned()) && names.contains(&"Milk".to_owned())
        },
    )
    .await;

    // A write that waits for its projection is readable at once.
    let (status, body) = f
        .call(
            "PATCH",
            &format!("/v1/lists/{}/items/{milk_id}?wait=projected", f.list),
            Some(json!({"status": "in_cart", "category": null, "assignee": f.owner.user_id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        f.item_names("?status=in_cart").await,
        vec!["Milk".to_owned()]
    );
    assert_eq!(
        f.item_names(&format!("?assignee={}", f.owner.user_id))
            .await,
        vec!["Milk".to_owned()]
    );
    assert_eq!(f.item_names("?category=dairy").await, Vec::<String>::new());
    eventually(
        "the client sees the change",
        Duration::from_secs(10),
        || async {
            client
                .snapshot()
                .items
                .iter()
                .any(|i| i.id == milk_id && i.category.is_none() && i.assignee.is_some())
        },
    )
    .await;

    let (status, _) = f
        .call(
            "DELETE",
            &format!("/v1/lists/{}/items/{milk_id}?wait=projected", f.list),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(f.item_names("").await, vec!["Bread".to_owned()]);
    let (status, _) = f
        .call(
            "DELETE",
            &format!("/v1/lists/{}/items/{milk_id}", f.list),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = f
        .call(
            "PATCH",
            &format!("/v1/lists/{}/items/{}", f.list, Uuid::new_v4()),
            Some(json!({"name": "Ghost"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    eventually(
        "the client sees the removal",
        Duration::from_secs(10),
        || async { client.snapshot().items.iter().all(|i| i.id != milk_id) },
    )
    .await;
    f.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_posted_twice_with_one_idempotency_key_is_added_once() {
    let db = TestDatabase::create().await;
    let f = fixture(&db).await;
    let post = || {
        let request = f
            .app
            .http()
            .post(
                f.app
                    .url(&format!("/v1/lists/{}/items?wait=projected", f.list)),
            )
            .bearer_auth(&f.token)
            .header("Idempotency-Key", "add-eggs")
            .json(&json!({"name": "Eggs"}));
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("JSON");
            (status, body)
        }
    };
    let answers = futures_util::future::join_all((0..4).map(|_| post())).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 201, "{body}");
            body["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1);
    let (_, again) = post().await;
    assert!(ids.contains(again["id"].as_str().expect("id")));
    assert_eq!(f.item_names("").await, vec!["Eggs".to_owned()]);
    f.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_are_searched_across_the_family_a_page_at_a_time() {
    let db = TestDatabase::create().await;
    let f = fixture(&db).await;
    let second = f.app.create_list(&f.owner, f.family, "Party").await;
    for (list, name) in [
        (f.list, "Red apples"),
        (f.list, "Pears"),
        (second, "Green apples"),
        (second, "Apple juice"),
    ] {
        let (status, body) = f
            .call(
                "POST",
                &format!("/v1/lists/{list}/items?wait=projected"),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/families/{}/items?q=APPLE&limit=2&cursor={c}", f.family),
            None => format!("/v1/families/{}/items?q=APPLE&limit=2", f.family),
        };
        let (status, page) = f.call("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().expect("items") {
            found.push(item["name"].as_str().expect("name").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    found.sort();
    assert_eq!(found, vec!["Apple juice", "Green apples", "Red apples"]);
    // Someone else's family is not searchable.
    let stranger = f.app.signup("stranger").await;
    let (status, _) = f
        .app
        .call(
            "GET",
            &format!("/v1/families/{}/items?q=apple", f.family),
            Some(&stranger.access_token),
            None,
        )
        .await;
    assert_eq!(status, 404);
    f.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_placed_through_the_document_and_move_through_legal_states_only() {
    // PostgreSQL: the vendor is inserted with SQL (no route creates vendors yet).
    let db = TestDatabase::postgres().await;
    let f = fixture(&db).await;
    let vendor = Uuid::now_v7();
    let pool = larder_storage::postgres::connect(db.url(), 1)
        .await
        .expect("connect");
    sqlx::query("INSERT INTO vendors (id, family_id, name, whatsapp_number) VALUES ($1, $2, 'Corner shop', '4915123456789')")
        .bind(vendor)
        .bind(f.family)
        .execute(&pool)
        .await
        .expect("vendor");
    pool.close().await;
    let client = f.client().await;
    let (_, milk) = f
        .call(
            "POST",
            &format!("/v1/lists/{}/items", f.list),
            Some(json!({"name": "Milk", "quantity": "2"})),
        )
        .await;
    let milk_id = milk["id"].as_str().expect("id").to_owned();

    let (status, body) = f
        .call(
            "POST",
            &format!("/v1/lists/{}/orders", f.list),
            Some(json!({"vendor_id": Uuid::new_v4(), "item_ids": [milk_id]})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("validation_failed")),
        "{body}"
    );
    let (status, order) = f
        .call(
            "POST",
            &format!("/v1/lists/{}/orders?wait=projected", f.list),
            Some(json!({"vendor_id": vendor, "item_ids": [milk_id], "note": "ring twice"})),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().expect("id").to_owned();
    assert_eq!(order["items"][0]["name"], "Milk");
    eventually(
        "the client sees the order",
        Duration::from_secs(10),
        || async { client.snapshot().orders.iter().any(|o| o.id == order_id) },
    )
    .await;
    let (status, read) = f.call("GET", &format!("/v1/orders/{order_id}"), None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(
        (read["status"].as_str(), read["vendor_id"].as_str()),
        (Some("placed"), Some(vendor.to_string().as_str()))
    );

    for (to, expected) in [
        ("confirmed", 200),
        ("placed", 409),
        ("delivered", 200),
        ("cancelled", 409),
    ] {
        let (status, body) = f
            .call(
                "PATCH",
                &format!("/v1/orders/{order_id}?wait=projected"),
                Some(json!({"status": to})),
            )
            .await;
        assert_eq!(status, expected, "to {to}: {body}");
    }
    let (status, page) = f
        .call(
            "GET",
            &format!("/v1/families/{}/orders?status=delivered", f.family),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["orders"].as_array().map(Vec::len), Some(1));
    let stranger = f.app.signup("stranger").await;
    let (status, _) = f
        .app
        .call(
            "GET",
            &format!("/v1/orders/{order_id}"),
            Some(&stranger.access_token),
            None,
        )
        .await;
    assert_eq!(status, 404);
    f.app.stop().await;
}

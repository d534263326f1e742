//! Vendors and shares over the REST API, the vendor's page, and the
//! WhatsApp webhook, against a real server, database and fake Graph API.

use std::time::Duration;

use larder_tests::whatsapp::{self, FakeGraph, SharingFamily};
use larder_tests::*;
use serde_json::json;

async fn start(configure: impl FnOnce(&mut larder_server::Config)) -> SharingFamily {
    SharingFamily::start(TestDatabase::create().await, configure).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_write_vendors_members_read_them_and_deleted_ones_stay_readable() {
    let f = start(|_| {}).await;
    let member = f.app.signup("member").await;
    f.app.add_member(&f.owner, f.family, &member).await;
    let stranger = f.app.signup("stranger").await;
    let vendors = format!("/v1/families/{}/vendors", f.family);

    let (status, shop) = f
        .call(
            "POST",
            &vendors,
            Some(
                json!({"name": "Corner shop", "whatsapp_number": "+44 7700 900123",
                "notes": "closes at 8"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{shop}");
    assert_eq!(shop["whatsapp_number"], "+447700900123", "normalised");
    let shop_id = json_uuid(&shop["id"]);

    for (number, expected) in [("07700 900123", 422), ("+44 7700 900123", 409)] {
        let (status, body) = f
            .call(
                "POST",
                &vendors,
                Some(json!({"name": "Other", "whatsapp_number": number})),
            )
            .await;
        assert_eq!(status, expected, "{number}: {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    let (status, _) = f
        .app
        .call(
            "POST",
            &vendors,
            Some(&member.access_token),
            Some(json!({"name": "Greengrocer", "whatsapp_number": "+447700900456"})),
        )
        .await;
    assert_eq!(status, 403, "members do not add vendors");
    let (status, listed) = f
        .app
        .call("GET", &vendors, Some(&member.access_token), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["vendors"].as_array().unwrap().len(), 1);
    let (status, _) = f
        .app
        .call(
            "GET",
            &format!("/v1/vendors/{shop_id}"),
            Some(&stranger.access_token),
            None,
        )
        .await;
    assert_eq!(status, 404, "strangers do not see vendors");

    let (status, renamed) = f
        .call(
            "PATCH",
            &format!("/v1/vendors/{shop_id}"),
            Some(json!({"name": "Raj's corner shop", "notes": null})),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["name"], "Raj's corner shop");
    assert!(renamed["notes"].is_null());

    f.item(json!({"name": "Milk"})).await;
    let (status, share) = f.try_share(shop_id).await;
    assert_eq!(status, 201, "{share}");
    let (status, _) = f
        .app
        .call(
            "DELETE",
            &format!("/v1/vendors/{shop_id}"),
            Some(&member.access_token),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = f
        .call("DELETE", &format!("/v1/vendors/{shop_id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, gone) = f.call("GET", &format!("/v1/vendors/{shop_id}"), None).await;
    assert_eq!(status, 200, "a deleted vendor stays readable");
    assert!(gone["deleted_at"].is_string());
    let (_, listed) = f.call("GET", &vendors, None).await;
    assert!(listed["vendors"].as_array().unwrap().is_empty());
    let old = f.get_share(json_uuid(&share["id"])).await;
    assert_eq!(
        old["vendor_name"], "Raj's corner shop",
        "its share stays readable"
    );
    let (status, body) = f.try_share(shop_id).await;
    assert_eq!(status, 422, "no new shares to a deleted vendor: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_shares_at_most_its_daily_allowance() {
    let f = start(|c| c.whatsapp.shares_per_family_per_day = 2).await;
    for n in 0..2 {
        let vendor = f.vendor("Shop", &format!("+4477009004{n:02}")).await;
        f.share(vendor).await;
    }
    let third = f.vendor("Shop", "+447700900499").await;
    let response = f
        .app
        .http()
        .post(f.app.url(&format!("/v1/lists/{}/shares", f.list)))
        .bearer_auth(&f.owner.access_token)
        .json(&json!({"vendor_id": third}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (86_000..=86_400).contains(&wait),
        "until the first ages out: {wait}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_shares_wait_and_say_why() {
    let f = start(|_| {}).await;
    let shop = f.vendor("Corner shop", "+447700900123").await;
    f.item(json!({"name": "Milk"})).await;
    let (status, share) = f.try_share(shop).await;
    assert_eq!(status, 201, "{share}");
    assert_eq!(share["status"], "pending");
    assert!(
        share["detail"]
            .as_str()
            .is_some_and(|d| d.contains("LARDER_WHATSAPP_TOKEN")),
        "{share}"
    );
    let (status, _) = f.app.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_goes_out_as_a_template_then_as_text_once_the_vendor_writes() {
    let fake = FakeGraph::start().await;
    let f = start(|c| whatsapp::configure(c, &fake)).await;
    let shop = f.vendor("Corner shop", "+447700900123").await;
    f.item(json!({"name": "Milk", "quantity": "2 l", "category": "Dairy"}))
        .await;
    f.item(json!({"name": "Bread", "category": "Bakery"})).await;

    let (status, share) = f.try_share(shop).await;
    assert_eq!(status, 201, "{share}");
    let first = json_uuid(&share["id"]);
    let version = share["version"].as_str().unwrap().to_owned();
    let (status, again) = f.try_share(shop).await;
    assert_eq!(status, 200, "the same version again is the same share");
    assert_eq!(json_uuid(&again["id"]), first);

    let sent = fake.wait_requests(1, Duration::from_secs(10)).await;
    assert_eq!(sent[0].kind(), "template", "no window is open yet");
    assert_eq!(sent[0].to(), "447700900123");
    assert_eq!(sent[0].share_id(), first);
    assert_eq!(sent[0].body["template"]["name"], "larder_list");
    assert_eq!(
        sent[0].template_params(),
        vec!["The Smiths", "2", "Bakery: Bread; Dairy: Milk × 2 l"]
    );
    let shown = f.wait_status(first, "sent").await;
    assert!(shown["detail"].is_null(), "{shown}");

    // The vendor writes back: the reply lands on the share and opens the window.
    let now = chrono::Utc::now().timestamp();
    f.deliver(&whatsapp::message_delivery(
        "447700900123",
        "wamid.IN1",
        "Got it, ready by 6",
        now,
    ))
    .await;
    let shown = f.get_share(first).await;
    assert_eq!(shown["replies"][0]["body"], "Got it, ready by 6");
    assert_eq!(shown["replies"][0]["sender_name"], "Raj");

    // After an edit, a new version goes out, as text inside the window.
    f.item(json!({"name": "Eggs", "quantity": "12"})).await;
    let (status, second) = f.try_share(shop).await;
    assert_eq!(status, 201, "{second}");
    assert_ne!(second["version"].as_str().unwrap(), version);
    let sent = fake.wait_requests(2, Duration::from_secs(10)).await;
    assert_eq!(sent[1].kind(), "text");
    let text = sent[1].content();
    assert!(
        text.contains(second["version"].as_str().unwrap()),
        "the version is in the text: {text}"
    );
    assert!(text.contains("• Eggs × 12"), "{text}");
    assert!(
        text.contains(&format!("{}/s/", whatsapp::PUBLIC_URL)),
        "the link on the public address is in the text: {text}"
    );
    assert_eq!(
        second["link"].as_str().map(|l| text.contains(l)),
        Some(true),
        "the family sees the link the vendor got: {second}"
    );
    f.wait_status(json_uuid(&second["id"]), "sent").await;
    assert_eq!(fake.requests().len(), 2, "repeated taps sent nothing more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_deduplicated_and_applied_in_order_of_meaning() {
    let fake = FakeGraph::start().await;
    let f = start(|c| whatsapp::configure(c, &fake)).await;
    let shop = f.vendor("Corner shop", "+447700900123").await;
    f.item(json!({"name": "Milk"})).await;
    let (_, share) = f.try_share(shop).await;
    let id = json_uuid(&share["id"]);
    let sent = fake.wait_requests(1, Duration::from_secs(10)).await;
    let wamid = sent[0].wamid.clone().expect("accepted");
    f.wait_status(id, "sent").await;

    // Verification challenge.
    let path = format!(
        "/v1/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={}&hub.challenge=1158201444",
        whatsapp::VERIFY_TOKEN
    );
    let answer = f.app.http().get(f.app.url(&path)).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.text().await.unwrap(), "1158201444");
    let wrong = "/v1/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1";
    let answer = f.app.http().get(f.app.url(wrong)).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 403);

    // Signatures.
    let now = chrono::Utc::now().timestamp();
    let read = whatsapp::status_delivery(&wamid, "read", Some(id), now + 2).to_string();
    let (status, _) = f.webhook(read.as_bytes(), None).await;
    assert_eq!(status, 401, "unsigned");
    let forged = whatsapp::signature(b"another body");
    let (status, _) = f.webhook(read.as_bytes(), Some(&forged)).await;
    assert_eq!(status, 401, "signed for another body");
    assert_eq!(f.get_share(id).await["status"], "sent", "nothing applied");

    // Out of order and repeated: read, then delivered, then read and sent again.
    let delivered = whatsapp::status_delivery(&wamid, "delivered", Some(id), now + 1);
    f.deliver(&serde_json::from_str(&read).unwrap()).await;
    for delivery in [
        &delivered,
        &serde_json::from_str(&read).unwrap(),
        &whatsapp::status_delivery(&wamid, "sent", Some(id), now),
    ] {
        f.deliver(delivery).await;
    }
    let shown = f.get_share(id).await;
    assert_eq!(shown["status"], "read", "{shown}");
    let history: Vec<&str> = shown["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        vec!["sent", "delivered", "read"],
        "each once, in time order"
    );

    // A signed body that is not JSON is refused after the signature passed.
    let (status, _) = f
        .webhook(b"not json", Some(&whatsapp::signature(b"not json")))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vendor_page_shows_the_frozen_list_escaped_and_stops_when_revoked() {
    let f = start(|_| {}).await;
    let shop = f.vendor("Corner shop", "+447700900123").await;
    let milk = f
        .item(json!({"name": "Milk 🥛", "quantity": "2", "category": "Dairy"}))
        .await;
    f.item(json!({"name": "<script>alert(1)</script>", "category": "Dairy"}))
        .await;
    f.item(json!({"name": "לחם", "category": "מאפייה", "note": "טרי"}))
        .await;
    let done = f.item(json!({"name": "Old receipt"})).await;
    for (id, status) in [(milk, "in_cart"), (done, "purchased")] {
        let (code, body) = f
            .call(
                "PATCH",
                &format!("/v1/lists/{}/items/{id}", f.list),
                Some(json!({"status": status})),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let (status, share) = f.try_share(shop).await;
    assert_eq!(status, 201, "{share}");
    let link = share["link"].as_str().expect("a link").to_owned();
    let path = &link[link.find("/s/").expect("a page link")..];

    let page = f.app.http().get(f.app.url(path)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("Weekly shop") && html.contains("The Smiths"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>"), "nothing typed runs");
    assert!(html.contains("Milk 🥛</span><span class=\"qty\" dir=\"auto\">× 2</span><span class=\"cart\">in cart</span>"));
    assert!(html.contains("<h2 dir=\"auto\">מאפייה</h2>"));
    assert!(html.contains("טרי"));
    assert!(
        !html.contains("Old receipt"),
        "purchased items are left out"
    );
    assert!(html.contains("3 items"));

    let (status, json) = f
        .app
        .call("GET", &format!("{path}?format=json"), None, None)
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["snapshot"]["item_count"], 3);
    assert_eq!(json["snapshot"]["version"], share["version"]);
    let categories: Vec<&str> = json["snapshot"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(categories, vec!["Dairy", "מאפייה"]);
    assert!(json["sync_token"].is_string());

    // The read-only token syncs the live list.
    let mut vendor = larder_client::SyncClient::new();
    vendor
        .connect(&f.app.sync_url_with(f.list, json["sync_token"].as_str()))
        .await
        .expect("the vendor's token syncs");
    wait_synced(&vendor).await;
    assert_eq!(vendor.snapshot().items.len(), 4);

    let (status, _) = f
        .call(
            "DELETE",
            &format!("/v1/shares/{}/link", share["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let page = f.app.http().get(f.app.url(path)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 404);
    assert!(page.text().await.unwrap().contains("not available"));
    let unknown = f
        .app
        .http()
        .get(f.app.url("/s/short"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let shown = f.get_share(json_uuid(&share["id"])).await;
    assert!(shown["link_revoked_at"].is_string());
    assert!(shown["sync_token"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_answers_the_share_it_was_placed_from() {
    let f = start(|_| {}).await;
    let shop = f.vendor("Corner shop", "+447700900123").await;
    let greens = f.vendor("Greengrocer", "+447700900456").await;
    let milk = f.item(json!({"name": "Milk", "quantity": "2"})).await;
    let (_, share) = f.try_share(shop).await;
    let share_id = json_uuid(&share["id"]);
    let orders = format!("/v1/lists/{}/orders?wait=projected", f.list);

    let (status, order) = f
        .call(
            "POST",
            &orders,
            Some(json!({"share_id": share_id, "item_ids": [milk]})),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(json_uuid(&order["share_id"]), share_id);
    assert_eq!(json_uuid(&order["vendor_id"]), shop, "the share's vendor");
    let (status, stored) = f
        .call(
            "GET",
            &format!("/v1/orders/{}", order["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(
        json_uuid(&stored["share_id"]),
        share_id,
        "projected with its share"
    );

    let (status, body) = f
        .call(
            "POST",
            &orders,
            Some(json!({"share_id": share_id, "vendor_id": greens, "item_ids": [milk]})),
        )
        .await;
    assert_eq!(status, 422, "another vendor than the share's: {body}");
    let other_list = f.app.create_list(&f.owner, f.family, "Party").await;
    let (status, body) = f
        .call(
            "POST",
            &format!("/v1/lists/{other_list}/orders"),
            Some(json!({"share_id": share_id, "item_ids": [milk]})),
        )
        .await;
    assert_eq!(status, 422, "a share of another list: {body}");
    let (status, body) = f
        .call("POST", &orders, Some(json!({"item_ids": [milk]})))
        .await;
    assert_eq!(status, 422, "neither vendor nor share: {body}");
}

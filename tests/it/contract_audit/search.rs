//! The audit contract's search cases: filters, tenancy, order and paging.

use chrono::TimeDelta;
use pseudostream::audit::{AuditCursor, AuditLog};
use pseudostream::filter::Fingerprint;
use pseudostream::model::{JobId, JobStatus};

use super::{all, base, entry, ids, query};

pub async fn case_search_by_user_time_and_tenant(log: &dyn AuditLog) {
    let t = base();
    let secs = TimeDelta::seconds;
    let a1 = entry(JobId::new(), "acme", "alice", t);
    let a2 = entry(JobId::new(), "acme", "alice", t + secs(1));
    let a3 = entry(JobId::new(), "acme", "alice", t + secs(2));
    let b = entry(
        JobId::new(),
        "acme",
        "bob",
        t + TimeDelta::milliseconds(1500),
    );
    let z = entry(JobId::new(), "globex", "zed", t + secs(1));
    for e in [&a1, &a2, &a3, &b, &z] {
        log.record_submission(e).await.unwrap();
    }

    // Round trip: every field comes back as written, newest first.
    let alice = log.search(&query("acme", Some("alice"))).await.unwrap();
    assert_eq!(alice, vec![a3.clone(), a2.clone(), a1.clone()]);
    assert_eq!(
        ids(&all(log, "acme").await),
        ids(&[a3.clone(), b.clone(), a2.clone(), a1.clone()])
    );
    // Tenants never see each other's rows, even for the same user name.
    assert_eq!(all(log, "globex").await, vec![z.clone()]);
    assert!(
        log.search(&query("globex", Some("alice")))
            .await
            .unwrap()
            .is_empty()
    );

    // The window is half-open: [from, to).
    let mut window = query("acme", None);
    window.from = Some(t + secs(1));
    window.to = Some(t + secs(2));
    assert_eq!(
        ids(&log.search(&window).await.unwrap()),
        ids(&[b.clone(), a2.clone()])
    );
    window.user = Some("alice".into());
    assert_eq!(log.search(&window).await.unwrap(), vec![a2.clone()]);
    window.to = None;
    assert_eq!(
        ids(&log.search(&window).await.unwrap()),
        ids(&[a3.clone(), a2.clone()])
    );

    let mut limited = query("acme", None);
    limited.limit = 2;
    assert_eq!(
        ids(&log.search(&limited).await.unwrap()),
        ids(&[a3.clone(), b.clone()])
    );

    // Same submission time: the later submission id (UUIDv7) first.
    let c1 = entry(JobId::new(), "acme", "carol", t);
    let c2 = entry(JobId::new(), "acme", "carol", t);
    log.record_submission(&c2).await.unwrap();
    log.record_submission(&c1).await.unwrap();
    let carol = log.search(&query("acme", Some("carol"))).await.unwrap();
    let mut expected = [c1.submission_id.clone(), c2.submission_id.clone()];
    expected.sort();
    expected.reverse();
    assert_eq!(
        ids(&carol),
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

pub async fn case_search_by_fingerprint_status_and_cursor(log: &dyn AuditLog) {
    let t = base();
    let at = |ms: i64| t + TimeDelta::milliseconds(ms);
    let mut rows = Vec::new();
    for (i, user) in ["ann", "bob", "ann", "cat", "ann"].into_iter().enumerate() {
        let mut e = entry(JobId::new(), "acme", user, at(i as i64 * 10));
        if i % 2 == 1 {
            e.fingerprint = Fingerprint([9; 32]).to_string();
        }
        rows.push(e);
    }
    // Two rows at one instant: the cursor must split them by id.
    let mut twin = entry(JobId::new(), "acme", "ann", at(40));
    twin.fingerprint = Fingerprint([9; 32]).to_string();
    // The twin sorts first (the later id), whatever order the ids came in.
    if twin.submission_id < rows[4].submission_id {
        std::mem::swap(&mut twin.submission_id, &mut rows[4].submission_id);
    }
    rows.push(twin);
    rows.push(entry(JobId::new(), "globex", "ann", at(5)));
    for e in &rows {
        log.record_submission(e).await.unwrap();
    }
    let mut done = super::record(rows[2].job_id.parse().unwrap(), t);
    done.status = JobStatus::Completed;
    log.record_progress(&done).await.unwrap();

    let mut by_print = query("acme", None);
    by_print.fingerprint = Some(Fingerprint([9; 32]).to_string());
    let found = log.search(&by_print).await.unwrap();
    assert_eq!(
        ids(&found),
        ids(&[rows[5].clone(), rows[3].clone(), rows[1].clone()])
    );

    let mut by_status = query("acme", None);
    by_status.status = Some(JobStatus::Completed);
    assert_eq!(
        ids(&log.search(&by_status).await.unwrap()),
        [rows[2].submission_id.as_str()]
    );
    by_status.status = Some(JobStatus::Running);
    assert!(log.search(&by_status).await.unwrap().is_empty());

    // Paging two at a time walks the tenant's rows in order, each once,
    // whatever the page size cuts through (here the two rows at 40 ms).
    let everything = all(log, "acme").await;
    assert_eq!(everything.len(), 6);
    let mut paged = Vec::new();
    let mut page = query("acme", None);
    page.limit = 2;
    loop {
        let got = log.search(&page).await.unwrap();
        let Some(last) = got.last() else { break };
        page.after = Some(AuditCursor::after(last).expect("a cursor after a stored row"));
        paged.extend(got);
    }
    assert_eq!(ids(&paged), ids(&everything));
    // The cursor composes with the other filters.
    let mut ann = query("acme", Some("ann"));
    ann.after = AuditCursor::after(&rows[4]);
    assert_eq!(
        ids(&log.search(&ann).await.unwrap()),
        ids(&[rows[2].clone(), rows[0].clone()])
    );
}

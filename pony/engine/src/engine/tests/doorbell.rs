//! The app's completion doorbell: however many completions one step makes for an app, a
//! blocked app is woken once, after the step's work.

use std::time::Instant;

use super::*;

#[test]
fn a_steps_completions_ring_a_blocked_app_once() {
    let (mut a, mut b) = pair();
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Block).unwrap();
    assert_eq!(
        listen(&mut a, &mut b, &mut y, 1, 0),
        Completion::Listening { cookie: 1 }
    );
    open(&mut x, 2, 0);
    let Completion::FlowOpened { result: Ok(flow), .. } = step_until(&mut a, &mut b, &mut x) else {
        panic!("open")
    };
    assert!(matches!(
        step_until(&mut a, &mut b, &mut y),
        Completion::FlowAccepted { .. }
    ));
    for i in 0..3u8 {
        x.send(flow, 0, &[i; 100], u64::from(i)).unwrap();
    }
    // The three messages leave a in one step (one packet each) …
    a.run(Instant::now());
    // … and y blocks on its doorbell.
    let bell = y
        .channel_mut()
        .completion()
        .expect("a blocking app has a doorbell");
    bell.arm();
    let (rung, suppressed) = bell.counters();
    b.run(Instant::now());
    let bell = y.channel_mut().completion().expect("still there");
    let (rung_after, suppressed_after) = bell.counters();
    assert_eq!(
        (rung_after - rung, suppressed_after - suppressed),
        (1, 0),
        "one write for the step, no further ring attempts"
    );
    for i in 0..3u8 {
        let Some(Completion::Received { head, len, .. }) = y.poll_completion().unwrap() else {
            panic!("message {i} not delivered in that step")
        };
        let mut got = Vec::new();
        y.take_received(head, len, &mut got).unwrap();
        assert_eq!(got, vec![i; 100]);
    }
}

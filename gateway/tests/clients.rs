//! The terminal clients, driven through stdin and stdout as a person would use them, against
//! the real binary serving the built-in default configuration: one full handoff from the
//! built-in bot to an agent, a survey, and a dropped connection.

mod common;

use std::process::Command;

use common::Proc;

/// The gateway on a fresh data directory (removed when the returned one is dropped),
/// and its URL.
fn serve() -> (Proc, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        Proc::spawn(&["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap()], true);
    let url = format!("http://{}", server.listening_address());
    (server, url, dir)
}

#[test]
fn chat_and_agent_clients_carry_a_conversation_from_the_bot_to_the_agent() {
    let (_server, url, _data) = serve();
    let mut alice = Proc::spawn(&["agent", "--url", &url, "--id", "alice"], false);
    alice.expect("Signed in as alice (available)");
    let mut ann = Proc::spawn(&["chat", "--url", &url, "--name", "Ann"], false);
    ann.expect("Connected to ChatWorkStream as Ann");
    ann.expect("[contoso-bot (virtual assistant) is here to help]");
    ann.expect("contoso-bot: Hi Ann, I'm Contoso's virtual assistant.");

    ann.type_line("I lost my credit card");
    ann.expect("contoso-bot: Was your card lost or stolen?");
    ann.type_line("stolen");
    ann.expect("[transferring you to an agent…]");
    ann.expect("[Alice (agent) joined the conversation]");

    alice.expect("=== #1 Ann — CreditCardQueue (chat) ===");
    let ctx = alice.expect("context: ");
    assert!(ctx.contains("BotHandoffTopic=CreditCard") && ctx.contains("CardIssue=stolen"), "{ctx}");
    alice.expect("summary: Credit card stolen: block it and send a replacement.");
    alice.expect("  Ann: I lost my credit card");
    alice.expect("  contoso-bot: Was your card lost or stolen?");
    alice.expect("(now talking in #1 with Ann)");

    alice.type_line("Hello Ann, I have blocked your card.");
    ann.expect("Alice: Hello Ann, I have blocked your card.");
    ann.type_line("Thank you! 🙏");
    alice.expect("#1 Ann: Thank you! 🙏");

    // A second customer, who ends the conversation herself: Alice's terminal says so and
    // drops it from her list (the README walkthrough's /end).
    let mut bea = Proc::spawn(&["chat", "--url", &url, "--name", "Bea"], false);
    bea.expect("contoso-bot: Hi Bea");
    bea.type_line("speak to agent");
    bea.expect("[Alice (agent) joined the conversation]");
    alice.expect("=== #2 Bea — GeneralQueue (chat) ===");
    alice.expect("(now talking in #2 with Bea)");
    bea.type_line("/end");
    assert_eq!(bea.wait_exit(), Some(0));
    alice.expect("#2 [ended by Bea]");
    alice.expect("(#2 with Bea has ended: removed from your list)");
    alice.type_line("/list");
    alice.expect("#1 Ann");
    alice.type_line("/use 1");
    alice.expect("(now talking in #1 with Ann)");

    alice.type_line("/end survey");
    ann.expect("[How did we do? Rate us with /rate 1-5");
    ann.expect("[the conversation has ended]");
    ann.type_line("/rate 7");
    ann.expect("! rate with a number from 1 to 5");
    ann.type_line("/rate 5 quick and kind");
    ann.expect("[thank you for your feedback]");
    assert_eq!(ann.wait_exit(), Some(0));

    alice.type_line("/list");
    alice.expect("(no conversations)");
    alice.type_line("/quit");
    assert_eq!(alice.wait_exit(), Some(0));
}

#[test]
fn a_dropped_connection_is_reported_clearly() {
    let (mut server, url, _data) = serve();
    let mut ann = Proc::spawn(&["chat", "--url", &url, "--name", "Ann"], false);
    ann.expect("contoso-bot: Hi Ann");
    Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert_eq!(server.wait_exit(), Some(0));
    ann.expect("[connection lost: the gateway is shutting down; reconnecting…]");

    // Nothing to connect to at all: a clear error and exit 1.
    let mut nobody = Proc::spawn(&["agent", "--url", &url, "--id", "alice"], true);
    let line = nobody.expect("cannot sign in as alice");
    assert!(line.contains(&url), "{line}");
    assert_eq!(nobody.wait_exit(), Some(1));
}

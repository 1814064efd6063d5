//! The built-in topic bot on the default configuration: what `switchboard serve` shows a
//! new user with nothing else running.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use switchboard_tests::{Customer, start_default};

async fn bot_says(c: &mut Customer) -> Result<String> {
    let m = c.until("a bot message", |v| v["type"] == "message" && v["from"]["role"] == "bot").await?;
    Ok(m["text"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn lost_credit_card_reaches_a_credit_card_agent_with_the_transcript() -> Result<()> {
    let s = start_default().await;
    let mut alice = s.agent("alice").await?;
    let mut carol = s.agent("carol").await?;
    let mut ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    let greeting = bot_says(&mut ann).await?;
    assert!(greeting.starts_with("Hi Ann,"), "{greeting}");

    ann.send(json!({"type":"message","text":"I LOST my credit card!"})).await?;
    assert!(bot_says(&mut ann).await?.contains("sorry"));
    let q = bot_says(&mut ann).await?;
    assert_eq!(q, "Was your card lost or stolen?");
    ann.send(json!({"type":"message","text":"It was stolen."})).await?;

    let a = alice.event("conversation.assigned").await?;
    assert_eq!(a["conversation"]["id"], ann.conversation.as_str());
    assert_eq!(a["value"]["queue"], "CreditCardQueue");
    assert_eq!(a["value"]["context"]["BotHandoffTopic"], "CreditCard");
    assert_eq!(a["value"]["context"]["CardIssue"], "stolen");
    assert_eq!(a["value"]["summary"], "Credit card stolen: block it and send a replacement.");
    let lines: Vec<String> = a["value"]["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["type"] == "message")
        .map(|t| format!("{}: {}", t["from"]["role"].as_str().unwrap(), t["text"].as_str().unwrap()))
        .collect();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert!(lines[0].starts_with("bot: Hi Ann"));
    assert_eq!(lines[1], "user: I LOST my credit card!");
    assert_eq!(lines[3], "bot: Was your card lost or stolen?");
    assert_eq!(lines[4], "user: It was stolen.");
    ann.until("the agent", |v| v["name"] == "conversation.assigned" && v["value"]["name"] == "Alice").await?;
    carol.quiet_for(Duration::from_millis(200), |v| v["name"] != "conversation.assigned").await?;
    Ok(())
}

#[tokio::test]
async fn speak_to_agent_escalates_at_once() -> Result<()> {
    let s = start_default().await;
    let mut bob = s.agent("bob").await?;
    let mut ben = s.start_chat("ChatWorkStream", "Ben", json!({})).await?;
    bot_says(&mut ben).await?;
    ben.send(json!({"type":"message","text":"Can I speak with an agent, please?"})).await?;
    assert_eq!(bot_says(&mut ben).await?, "Let me connect you with an agent.");
    let a = bob.event("conversation.assigned").await?;
    assert_eq!(a["value"]["queue"], "GeneralQueue");
    assert_eq!(a["value"]["summary"], "The customer asked for a person.");
    Ok(())
}

#[tokio::test]
async fn two_misses_in_a_row_escalate() -> Result<()> {
    let s = start_default().await;
    let mut carol = s.agent("carol").await?;
    let mut cy = s.start_chat("ChatWorkStream", "Cy", json!({})).await?;
    bot_says(&mut cy).await?;
    cy.send(json!({"type":"message","text":"purple monkey dishwasher"})).await?;
    assert!(bot_says(&mut cy).await?.starts_with("Sorry, I didn't get that"));
    carol.quiet_for(Duration::from_millis(200), |v| v["name"] != "conversation.assigned").await?;
    cy.send(json!({"type":"message","text":"zebra crossing"})).await?;
    assert_eq!(bot_says(&mut cy).await?, "Let me connect you with an agent.");
    let a = carol.event("conversation.assigned").await?;
    assert_eq!(a["value"]["queue"], "GeneralQueue");
    Ok(())
}

#[tokio::test]
async fn a_question_with_options_asks_again_and_the_answer_routes() -> Result<()> {
    let s = start_default().await;
    let mut carol = s.agent("carol").await?;
    let mut di = s.start_chat("ChatWorkStream", "Di", json!({})).await?;
    bot_says(&mut di).await?;
    di.send(json!({"type":"message","text":"question about my mortgage"})).await?;
    assert!(bot_says(&mut di).await?.starts_with("Is this about a new home loan"));
    di.send(json!({"type":"message","text":"maybe"})).await?;
    assert_eq!(bot_says(&mut di).await?, "Please choose one of: new, existing.");
    di.send(json!({"type":"message","text":"Existing"})).await?;
    let a = carol.event("conversation.assigned").await?;
    assert_eq!(a["value"]["queue"], "HomeLoanQueue");
    assert_eq!(a["value"]["context"]["LoanType"], "existing");
    assert_eq!(a["value"]["summary"], "Home loan question (existing loan).");
    Ok(())
}

#[tokio::test]
async fn the_bot_answers_by_itself_and_ends_with_a_survey() -> Result<()> {
    let s = start_default().await;
    let mut eve = s.start_chat("ChatWorkStream", "Eve", json!({})).await?;
    bot_says(&mut eve).await?;
    eve.send(json!({"type":"message","text":"what are your opening hours"})).await?;
    assert!(bot_says(&mut eve).await?.starts_with("Our branches are open"));
    eve.send(json!({"type":"message","text":"no thanks, bye"})).await?;
    bot_says(&mut eve).await?;
    eve.event("survey.request").await?;
    let eoc = eve.activity("endOfConversation").await?;
    assert_eq!(eoc["from"]["role"], "bot");
    eve.send(json!({"type":"event","name":"survey.response","value":{"rating":4,"comment":"helpful"}})).await?;
    eve.event("ack").await?;
    let conv = s.running.hub.conversation(&eve.conversation).unwrap();
    assert_eq!(conv.inner.lock().survey, Some(json!({"rating":4,"comment":"helpful"})));
    Ok(())
}

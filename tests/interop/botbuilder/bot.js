// A bot written the ordinary botbuilder way (CloudAdapter, ActivityHandler, EventFactory),
// served with Node's http module, for Switchboard's Bot Connector tests.
//
// Configuration comes from the environment exactly as an Azure bot's would
// (ConfigurationBotFrameworkAuthentication reads MicrosoftAppId, MicrosoftAppPassword,
// ToChannelFromBotLoginUrl, ToChannelFromBotOAuthScope, ToBotFromChannelTokenIssuer,
// ToBotFromChannelOpenIdMetadataUrl). HANDOFF=event hands off with
// EventFactory.createHandoffInitiation; HANDOFF=tags with Omnichannel's channelData.tags.
// It prints "listening <port>" when ready and "handoff.status <state>" for every status it
// receives, which the Rust test reads.
'use strict';

const http = require('http');
const {
    ActivityHandler,
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
    EventFactory,
} = require('botbuilder');

const auth = new ConfigurationBotFrameworkAuthentication(process.env);
const adapter = new CloudAdapter(auth);
adapter.onTurnError = async (context, error) => {
    console.error(`turn error: ${error && error.stack ? error.stack : error}`);
};

class ContosoBot extends ActivityHandler {
    constructor() {
        super();
        this.transcripts = new Map();
        this.onMembersAdded(async (context, next) => {
            for (const member of context.activity.membersAdded || []) {
                if (member.id !== context.activity.recipient.id) {
                    const region = (context.activity.channelData || {}).context || {};
                    const where = region.Region ? ` (${region.Region})` : '';
                    await context.sendActivity(`Welcome to Contoso, ${member.name || 'there'}${where}! How can I help?`);
                }
            }
            await next();
        });
        this.onMessage(async (context, next) => {
            const text = (context.activity.text || '').trim();
            const seen = this.transcripts.get(context.activity.conversation.id) || [];
            seen.push(context.activity);
            this.transcripts.set(context.activity.conversation.id, seen);
            if (/agent/i.test(text)) {
                const vars = { BotHandoffTopic: 'CreditCard', va_LastPhrase: text };
                if (process.env.HANDOFF === 'tags') {
                    await context.sendActivity({
                        type: 'message',
                        text: 'Transferring you to an agent.',
                        channelData: { tags: JSON.stringify({ type: 'Escalate', context: vars }) },
                    });
                } else {
                    await context.sendActivity('Transferring you to an agent.');
                    const handoff = EventFactory.createHandoffInitiation(context, vars, { activities: seen });
                    handoff.text = `Customer asked: ${text}`;
                    await context.sendActivity(handoff);
                }
            } else if (/bye/i.test(text)) {
                if (process.env.HANDOFF === 'tags') {
                    await context.sendActivity({
                        type: 'message',
                        text: 'Goodbye!',
                        channelData: { tags: JSON.stringify({ type: 'EndConversation' }) },
                    });
                } else {
                    await context.sendActivity({ type: 'endOfConversation' });
                }
            } else {
                await context.sendActivity(`You said: ${text}`);
            }
            await next();
        });
        this.onEvent(async (context, next) => {
            if (context.activity.name === 'handoff.status') {
                console.log(`handoff.status ${(context.activity.value || {}).state}`);
            }
            await next();
        });
    }
}

const bot = new ContosoBot();

const server = http.createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/api/messages') {
        res.statusCode = 404;
        res.end();
        return;
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
        try {
            req.body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch (e) {
            res.statusCode = 400;
            res.end();
            return;
        }
        // The few response methods CloudAdapter uses (restify and express have them).
        res.status = (code) => {
            res.statusCode = code;
            return res;
        };
        res.header = (name, value) => {
            res.setHeader(name, value);
            return res;
        };
        res.send = (body) => {
            if (body !== undefined) {
                res.setHeader('content-type', 'application/json');
                res.write(typeof body === 'string' ? body : JSON.stringify(body));
            }
            return res;
        };
        adapter.process(req, res, (context) => bot.run(context)).catch((e) => {
            console.error(`process: ${e}`);
            if (!res.writableEnded) {
                res.statusCode = 500;
                res.end();
            }
        });
    });
});

server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
    console.log(`listening ${server.address().port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));

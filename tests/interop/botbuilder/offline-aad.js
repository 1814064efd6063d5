// Loaded with `node --require` by the test with authentication on, never by the bot itself.
//
// MSAL (botbuilder's token client) asks Azure AD's instance discovery
// (login.microsoftonline.com/common/discovery/instance) about any authority it does not
// know before it uses it, and refuses the authority when that request fails. The test
// machine has no internet access, so this answers that one request locally, with a
// discovery answer that lists no metadata for the host, which MSAL takes for a custom
// domain and trusts. Everything else, Switchboard's own metadata and tokens included,
// goes over the network unchanged.
'use strict';

const http = require('http');
const https = require('https');

const DISCOVERY_HOST = 'login.microsoftonline.com';
const DISCOVERY_PATH = '/common/discovery/instance';

const answer = http.createServer((req, res) => {
    const authorize = new URL(req.url, 'http://x').searchParams.get('authorization_endpoint') || '';
    const authority = authorize.replace(/oauth2\/v2\.0\/authorize$/, '');
    res.setHeader('content-type', 'application/json');
    res.end(
        JSON.stringify({
            tenant_discovery_endpoint: `${authority}v2.0/.well-known/openid-configuration`,
            'api-version': '1.1',
            metadata: [],
        }),
    );
});
answer.listen(0, '127.0.0.1');
answer.unref();

const request = https.request;
https.request = function (options, ...rest) {
    const o = typeof options === 'string' || options instanceof URL ? new URL(options) : options;
    const host = o.hostname || o.host;
    const path = o.pathname || o.path || '';
    if (host === DISCOVERY_HOST && path.startsWith(DISCOVERY_PATH) && answer.address()) {
        const search = o.search || (o.path && o.path.includes('?') ? o.path.slice(o.path.indexOf('?')) : '');
        return http.request(
            {
                hostname: '127.0.0.1',
                port: answer.address().port,
                path: `${DISCOVERY_PATH}${search.startsWith('?') ? search : ''}`,
                method: o.method || 'GET',
                headers: o.headers,
            },
            ...rest.filter((r) => typeof r === 'function'),
        );
    }
    return request.call(this, options, ...rest);
};

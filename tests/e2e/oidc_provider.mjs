// A real OpenID provider for the sign-in tests: panva's `oidc-provider` (OpenID Certified),
// with its development interactions (a login form that accepts any user name) and one
// confidential client, the gateway.
//
// Usage: node oidc_provider.mjs '<json spec>'
//   spec = { port, clientId, clientSecret, redirectUris: [...] }
// Prints {"issuer": "..."} on stdout once listening; logs go to stderr.

import Provider from 'oidc-provider';

const spec = JSON.parse(process.argv[2] || '{}');
const issuer = `http://127.0.0.1:${spec.port}`;

const configuration = {
  clients: [
    {
      client_id: spec.clientId,
      client_secret: spec.clientSecret,
      redirect_uris: spec.redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['sign-in-tests-only'] },
  claims: { openid: ['sub'], profile: ['name'] },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, name: `User ${id}` }; } };
  },
  // first-party client: no consent screen
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile');
    await grant.save();
    return grant;
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, err) => process.stderr.write(`server_error ${err}\n`));
provider.listen(spec.port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ issuer }) + '\n');
});

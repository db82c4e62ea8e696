import { exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { IssuerKeys, OidcError } from './issuer-keys.js';

const ISSUER = 'https://ci.example.com';

async function key(kid: string) {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256' } as JWK };
}

describe('IssuerKeys: discovery, a cached JWKS, a refetch for an unknown key', () => {
  let now = 1_000_000;
  let jwks: JWK[] = [];
  let fetched: string[] = [];
  const fetchJson = async (url: string) => {
    fetched.push(url);
    if (url === `${ISSUER}/.well-known/openid-configuration`) return { issuer: ISSUER, jwks_uri: `${ISSUER}/keys` };
    if (url === `${ISSUER}/keys`) return { keys: jwks };
    throw new Error(`unexpected ${url}`);
  };
  const sign = (k: Awaited<ReturnType<typeof key>>) =>
    new SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'ES256', kid: k.kid }).setIssuer(ISSUER).setAudience('strata').setExpirationTime(Math.floor(Date.now() / 1000) + 60).sign(k.privateKey);

  beforeEach(() => {
    fetched = [];
    now = 1_000_000;
  });

  it('fetches discovery and the JWKS once, then uses the cache until it ages', async () => {
    const k1 = await key('k1');
    jwks = [k1.jwk];
    const keys = new IssuerKeys(fetchJson, () => now);
    const opts = { issuer: ISSUER, audience: 'strata' };
    await keys.verify(ISSUER, await sign(k1), opts);
    await keys.verify(ISSUER, await sign(k1), opts);
    expect(fetched).toEqual([`${ISSUER}/.well-known/openid-configuration`, `${ISSUER}/keys`]);
    now += 10 * 60_000;
    await keys.verify(ISSUER, await sign(k1), opts);
    expect(fetched).toHaveLength(4);
  });

  it('refetches for a key id it lacks, at most once a second', async () => {
    const k1 = await key('k1');
    const k2 = await key('k2');
    const k3 = await key('k3');
    jwks = [k1.jwk];
    const keys = new IssuerKeys(fetchJson, () => now);
    const opts = { issuer: ISSUER, audience: 'strata' };
    await keys.verify(ISSUER, await sign(k1), opts);
    jwks = [k1.jwk, k2.jwk];
    await keys.verify(ISSUER, await sign(k2), opts);
    expect(fetched).toHaveLength(4);
    jwks = [k1.jwk, k2.jwk, k3.jwk];
    await expect(keys.verify(ISSUER, await sign(k3), opts)).rejects.toThrow(/no applicable key found/i);
    expect(fetched).toHaveLength(4);
    now += 1000;
    await keys.verify(ISSUER, await sign(k3), opts);
    expect(fetched).toHaveLength(6);
  });

  it('refuses a discovery document naming another issuer', async () => {
    const keys = new IssuerKeys(async () => ({ issuer: 'https://evil.example.com', jwks_uri: 'https://evil.example.com/keys' }), () => now);
    const k1 = await key('k1');
    const err = await keys.verify(ISSUER, await sign(k1), {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OidcError);
    expect((err as OidcError).message).toBe(`The discovery document at ${ISSUER}/.well-known/openid-configuration names issuer "https://evil.example.com", not "${ISSUER}".`);
  });
});

use super::*;
use crypto_bigint::BoxedUint;
use rsa::pkcs8::DecodePrivateKey;

/// The publicly verifiable token vectors of the Privacy Pass reference implementation (pat-go,
/// as shipped with the `privacypass` crate): key, challenge, nonce, blind, salt, and the token
/// request, response and token each must give.
#[test]
fn reference_vectors_give_the_same_request_response_and_token() {
    let vectors: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(include_str!("test-vectors/rfc9578-public.json")).unwrap();
    assert_eq!(vectors.len(), 5);
    for vector in vectors {
        let hex = |name: &str| hex::decode(vector[name].as_str().unwrap()).unwrap();
        let pem = String::from_utf8(hex("skS")).unwrap();
        let der = rsa::PrivateKey::from_pkcs8_pem(&pem)
            .map(|key| rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&key).unwrap())
            .unwrap();
        let secret = IssuerSecretKey::from_pkcs8_der(der.as_bytes()).unwrap();
        let public = IssuerPublicKey::from_spki(&hex("pkS")).unwrap();
        assert_eq!(secret.public_key(), &public);

        let challenge_bytes = hex("token_challenge");
        let challenge = parse_challenge(&challenge_bytes);
        let digest: [u8; 32] = Sha256::digest(&challenge_bytes).into();
        let nonce: [u8; 32] = hex("nonce").try_into().unwrap();
        let salt: [u8; 48] = hex("salt").try_into().unwrap();
        let r = BoxedUint::from_be_slice_vartime(&hex("blind"));
        let input = Token::input(&nonce, &digest, &public.key_id());
        let blinded = public.blind_with(&input, &salt, r).unwrap();
        let (request, pending) = pending(&public, nonce, digest, blinded);
        assert_eq!(
            hex::encode(request.encode()),
            hex::encode(hex("token_request"))
        );

        let response = issue(&secret, &request).unwrap();
        assert_eq!(hex::encode(&response), hex::encode(hex("token_response")));
        let token = pending.finish(&public, &response).unwrap();
        assert_eq!(hex::encode(token.encode()), hex::encode(hex("token")));
        assert_eq!(Token::decode(&token.encode()).unwrap(), token);
        if let Some(challenge) = challenge {
            token.verify(&challenge, &public).unwrap();
        }
    }
}

/// The vectors' challenges carry a redemption context, which Roost's never do; where one is
/// empty it is rebuilt from its parts and must encode the same.
fn parse_challenge(bytes: &[u8]) -> Option<TokenChallenge> {
    let issuer_len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
    let issuer = std::str::from_utf8(&bytes[4..4 + issuer_len]).unwrap();
    let context_len = bytes[4 + issuer_len] as usize;
    let at = 5 + issuer_len + context_len;
    let origin = std::str::from_utf8(&bytes[at + 2..]).unwrap();
    assert_eq!(
        encode_challenge(
            issuer.as_bytes(),
            &bytes[5 + issuer_len..at],
            origin.as_bytes()
        ),
        bytes
    );
    (context_len == 0).then(|| TokenChallenge::new(issuer, origin))
}

fn issued(secret: &IssuerSecretKey, challenge: &TokenChallenge) -> Token {
    let (request, pending) = request_token(secret.public_key(), challenge).unwrap();
    let response = issue(secret, &request).unwrap();
    pending.finish(secret.public_key(), &response).unwrap()
}

#[test]
fn a_token_is_good_only_for_its_origin_and_its_issuers_key() {
    let secret = IssuerSecretKey::generate();
    let for_b = TokenChallenge::new("a.test", "b.test");
    let token = issued(&secret, &for_b);
    token.verify(&for_b, secret.public_key()).unwrap();
    assert_eq!(
        token.verify(
            &TokenChallenge::new("a.test", "c.test"),
            secret.public_key()
        ),
        Err(TokenError::WrongChallenge)
    );
    assert_eq!(
        token.verify(
            &TokenChallenge::new("evil.test", "b.test"),
            secret.public_key()
        ),
        Err(TokenError::WrongChallenge)
    );
    let other = IssuerSecretKey::generate();
    assert_eq!(
        token.verify(&for_b, other.public_key()),
        Err(TokenError::UnknownKey)
    );
    let mut forged = token.clone();
    forged.nonce[0] ^= 1;
    assert!(matches!(
        forged.verify(&for_b, secret.public_key()),
        Err(TokenError::Signature(_))
    ));
}

#[test]
fn a_token_travels_in_an_authorization_header() {
    let secret = IssuerSecretKey::generate();
    let challenge = TokenChallenge::new("a.test", "b.test");
    let tokens = vec![issued(&secret, &challenge), issued(&secret, &challenge)];
    let header = to_header(&tokens, "a.test");
    assert!(header.starts_with("PrivateToken token=\""));
    assert_eq!(
        from_header(&header).unwrap(),
        (tokens.clone(), "a.test".to_string())
    );
    let too_many = to_header(&vec![tokens[0].clone(); 9], "a.test");
    assert!(from_header(&too_many).is_err());
    for bad in [
        "",
        "Bearer x",
        "PrivateToken",
        "PrivateToken token=\"AAAA\", issuer=\"a.test\"",
        "PrivateToken issuer=\"a.test\"",
        "PrivateToken token=\"!!!\", issuer=\"a.test\"",
    ] {
        assert!(from_header(bad).is_err(), "{bad}");
    }
    let without_issuer = header.split(", issuer").next().unwrap().to_string();
    assert!(from_header(&without_issuer).is_err());
}

#[test]
fn an_issuer_refuses_a_request_for_another_key() {
    let secret = IssuerSecretKey::generate();
    let other = IssuerSecretKey::generate();
    let challenge = TokenChallenge::new("a.test", "a.test");
    let (mut request, _) = request_token(other.public_key(), &challenge).unwrap();
    if request.truncated_key_id == secret.public_key().truncated_key_id() {
        request.truncated_key_id ^= 1;
    }
    assert_eq!(issue(&secret, &request), Err(TokenError::UnknownKey));
}

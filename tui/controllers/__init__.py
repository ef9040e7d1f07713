"""One controller per screen: each calls ``toolkit`` and hands plain data to its views."""

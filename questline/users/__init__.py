"""Players and admins: sign-up, sign-in (login and refresh), bans."""

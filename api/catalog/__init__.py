"""Quest Catalog service: quests and rewards, cached reads, admin writes."""

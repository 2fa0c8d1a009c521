"""The quest catalog: quests, rewards, and the read cache in front of them."""

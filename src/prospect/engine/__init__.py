"""prospect.engine"""

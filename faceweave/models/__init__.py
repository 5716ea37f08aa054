"""faceweave.models"""
